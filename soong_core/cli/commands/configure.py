"""``soong configure``: a wizard, or the same thing scripted with flags and ``-n``.

Every answer is checked against the provider where it can be (the API key by a call,
the GPU against the catalogue, regions against the provider's list) and the whole file
is validated before it is written, so a run that fails leaves the old config intact.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cleo.helpers import option
from cleo.io.inputs.option import Option

from soong_core.cli.command import SoongCommand
from soong_core.errors import SoongError, UsageError

if TYPE_CHECKING:
    from soong_core.api import Soong
    from soong_core.config import Config
    from soong_core.models import InstanceType


class ConfigureCommand(SoongCommand):
    name = "configure"
    description = "Set up soong: API key, SSH key, default GPU, regions, lease, idle timeout, budget."
    help = ("Asks for each setting, showing the current value as the default. With "
            "<comment>-n</comment> nothing is asked: flags set values and everything else "
            "stays as it is. The API key is never taken as an argument (process lists and "
            "shell history would show it): type it at the hidden prompt, or pipe it with "
            "<comment>--api-key-stdin</comment>, or set the provider's environment variable."
            "\n\nWith <comment>--profile NAME</comment> (or <comment>--sim</comment>) only "
            "what belongs to that cloud is saved in the profile: the provider's endpoint "
            "and key, the clock, the flags given and the answers changed; everything else "
            "stays in the main file, so <comment>soong config set</comment> there binds "
            "every cloud. Keys the profile held that only repeat the main file are removed "
            "(one warning names them).\n\nA <comment>--config</comment> file that does not "
            "exist is created."
            "\n\nThe lease and idle timeout set here are enforced on each instance by its "
            "lease agent (Lambda Cloud and the simulator).")
    options: ClassVar[list[Option]] = [
        option("provider", description="Provider to use (default: defaults.provider).", flag=False),
        option("api-key-stdin", description="Read the provider API key from standard input."),
        option("gpu", description="Default instance type.", flag=False),
        option("region", description="Preferred region.", flag=False),
        option("fallback-region", description="A region to try when the preferred one is full "
               "(repeat for more; 'none' clears them).", flag=False, multiple=True),
        option("model", description="Default model ('none' clears it).", flag=False),
        option("filesystem", description="Filesystem to attach by default ('none' clears it).",
               flag=False),
        option("hours", description="Default lease in hours (the instance's agent stops it "
               "then).", flag=False),
        option("idle-minutes", description="Idle timeout in minutes (the instance's agent "
               "stops it after that long unused).", flag=False),
        option("budget", description="Spending cap in dollars per period ('none': no cap).",
               flag=False),
        option("budget-period", description="day, week, month or none.", flag=False),
        option("key-name", description="Name of the SSH key at the provider.", flag=False),
        option("key-path", description="Private SSH key file (its .pub is registered).",
               flag=False),
        option("no-ssh-key", description="Do not check or register an SSH key."),
    ]

    def handle(self) -> int:
        from soong_core.config import config_path, save_profile_values, save_values

        self._values: dict[str, Any] = {}
        self._given: set[str] = set()  # keys given by a flag
        self._answered: set[str] = set()  # keys answered at a prompt (maybe unchanged)
        config = self._load({})
        provider_name = self._provider_name(config)
        soong = self._soong_with(self._values)
        credential = self._credential(soong)
        if credential is not None:
            soong = self._soong_with(self._values)
        types = soong.instance_types()  # proves the key works, and feeds the questions
        if not self.option("no-ssh-key"):
            self._ssh_key(soong)
        self._catalogue_choices(soong, types)
        self._limits(soong, types)
        if self.app.profile:
            # A profile holds what differs for its cloud; the rest stays in the main
            # file, where `soong config set` changes it for every cloud.
            from soong_core.config import profile_keys_of

            keep = profile_keys_of(soong.provider)
            values = {key: value for key, value in self._values.items()
                      if key in keep or key in self._given
                      or (key in self._answered and not _same(value, config, key))}
            saved = save_profile_values(self.app.profile, values, config=self.app.config_path,
                                        keep=keep, plugins=self.plugins,
                                        partial_plugins=self.app.no_plugins, missing_ok=True)
        else:
            values = self._values
            saved = save_values(config_path(self.app.config_path), values,
                                plugins=self.plugins, partial_plugins=self.app.no_plugins)
        self.line(f"<info>saved</info> {len(values)} settings in {saved.path} (mode 0600)")
        self.line(f"  provider {provider_name}, GPU {saved.get('defaults.gpu') or '(none)'}, "
                  f"region {saved.get('defaults.region') or '(any)'}")
        self.line("  next: `soong start`")
        return 0

    # -- helpers --------------------------------------------------------------------------

    def _interactive(self) -> bool:
        return self.io.is_interactive()

    def _load(self, values: dict[str, Any]) -> Config:
        """The configuration with ``values`` over it; a ``--config`` file that does not
        exist yet means defaults (this command creates it)."""
        from soong_core.config import load_config

        return load_config(self.app.config_path, plugins=self.plugins,
                           overrides={**self.run_overrides(), **values},
                           partial_plugins=self.app.no_plugins, profile=self.app.profile,
                           missing_ok=True)

    def _soong_with(self, values: dict[str, Any]) -> Soong:
        from soong_core.api import Soong

        return Soong(self._load(values), plugins=self.plugins)

    def _provider_name(self, config: Config) -> str:
        name = self.option("provider") or config["defaults"]["provider"]
        self.plugins.providers().get(name)  # unknown: one line listing the known ones
        self._values["defaults.provider"] = name
        if self.option("provider"):
            self._given.add("defaults.provider")
        return name

    def _credential(self, soong: Soong) -> str | None:
        """Ask for (or read) the provider's key and prove it with one call; never echo it."""
        key_path = soong.provider.credential_key
        if not key_path:
            return None
        current = soong.config.get(key_path)
        if self.option("api-key-stdin"):
            key = self._read_stdin_line("API key")
        elif self._interactive():
            hint = " (Enter keeps the current one)" if current else ""
            key = self.ask_secret(f"API key{hint}: ") or current
        else:
            key = current
        if not key:
            raise UsageError("no API key", hints=["type it at the prompt (without -n), pipe it with "
                                                  "--api-key-stdin, or set the provider's "
                                                  "environment variable"])
        checker = self._soong_with({**self._values, key_path: key})
        try:
            checker.instance_types()
        except SoongError as exc:
            raise SoongError(f"the API key does not work: {exc.message}", hints=exc.hints,
                             exit_code=exc.exit_code) from None
        self._values[key_path] = key
        self.line("<info>API key works</info>")
        return key

    def _read_stdin_line(self, what: str) -> str:
        stream = self.io.input.stream
        text = stream.readline().strip() if stream is not None else ""
        if not text:
            raise UsageError(f"--api-key-stdin: no {what} on standard input")
        return text

    def _ask(self, key: str, question: str, current: Any, flag: str | None) -> Any:
        """A flag's value, else the answer (default: ``current``), else ``current``.
        Notes which of the two gave ``key``."""
        if flag is not None:
            self._given.add(key)
            return flag
        if not self._interactive():
            return current
        shown = "" if current in (None, "", []) else f" [{current}]"
        answer = self.ask(f"{question}{shown}: ")
        if answer in (None, ""):
            return current
        self._answered.add(key)
        return answer

    # -- SSH key ----------------------------------------------------------------------------

    def _ssh_key(self, soong: Soong) -> None:
        from soong_core.models import same_public_key

        ssh = soong.config.get("ssh") or {}
        key_path = Path(os.path.expanduser(self.option("key-path") or ssh.get("key_path")
                                           or "~/.ssh/id_ed25519"))
        key_name = (self.option("key-name") or soong.config.get("defaults.ssh_key_name")
                    or "soong")
        public = key_path.with_name(key_path.name + ".pub")
        if not public.is_file():
            self._generate_key(key_path)
        public_key = public.read_text().strip()
        if not public_key.startswith(("ssh-", "ecdsa-", "sk-")):
            raise UsageError(f"{public} does not hold an SSH public key",
                             hints=["point --key-path at a private key whose .pub is next to it"])
        registered = {k.name: k for k in soong.provider.list_ssh_keys()}
        existing = registered.get(key_name)
        if existing is None:
            soong.provider.add_ssh_key(key_name, public_key)
            self.line(f"<info>registered</info> SSH key {key_name} ({public})")
        elif existing.public_key and not same_public_key(existing.public_key, public_key):
            raise SoongError(f"the provider already has an SSH key named {key_name} with another "
                             f"public key than {public}",
                             hints=["choose another name with --key-name, or another local key "
                                    "with --key-path"])
        else:
            self.line(f"SSH key {key_name} is registered")
        self._values["defaults.ssh_key_name"] = key_name
        if self.option("key-name"):
            self._given.add("defaults.ssh_key_name")
        if "ssh.key_path" in soong.config.schema.keys():  # the tunnel plugin's key
            self._values["ssh.key_path"] = str(key_path)
            if self.option("key-path"):
                self._given.add("ssh.key_path")

    def _generate_key(self, key_path: Path) -> None:
        if key_path.exists():
            raise UsageError(f"{key_path} has no public key next to it ({key_path.name}.pub)",
                             hints=[f"recreate it: ssh-keygen -y -f {key_path} > {key_path}.pub"])
        if self._interactive() and not self.confirm(f"No SSH key at {key_path}. Create one?",
                                                    default=True):
            raise UsageError("an SSH key is needed to reach instances",
                             hints=["create one with ssh-keygen, or pass --no-ssh-key"])
        from soong_core.files import private_dir

        private_dir(key_path.parent)
        try:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "soong",
                            "-f", str(key_path)], check=True, capture_output=True, timeout=60)
        except FileNotFoundError:
            raise SoongError("ssh-keygen is not installed, and no SSH key exists at "
                             f"{key_path}", hints=["install OpenSSH, or pass --key-path"]) from None
        except subprocess.CalledProcessError as exc:
            message = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
            raise SoongError(f"ssh-keygen failed: {message[0] if message else exc}") from None
        self.line(f"<info>created</info> SSH key {key_path}")

    # -- catalogue ------------------------------------------------------------------------

    def _catalogue_choices(self, soong: Soong, types: list[InstanceType]) -> None:
        from soong_core.costs import format_rate

        defaults = soong.config["defaults"]
        by_name = {t.name: t for t in types}
        if self._interactive() and self.option("gpu") is None:
            self.line("")
            for t in sorted(types, key=lambda t: t.price_cents_per_hour):
                where = ", ".join(t.regions_with_capacity) or "no capacity now"
                self.line(f"  {t.name:28} {format_rate(t.price_cents_per_hour):>10}  {where}")
        gpu = self._ask("defaults.gpu", "Default GPU type", defaults["gpu"], self.option("gpu"))
        if gpu and gpu not in by_name:
            raise UsageError(f"unknown GPU type {gpu!r}",
                             hints=[f"known types: {', '.join(sorted(by_name))}"])
        self._values["defaults.gpu"] = gpu
        region = self._ask("defaults.region", "Preferred region", defaults["region"],
                           self.option("region"))
        fallbacks_flag = self.option("fallback-region") or None
        fallbacks = self._ask("defaults.fallback_regions", "Fallback regions (comma-separated)",
                              ", ".join(defaults["fallback_regions"]),
                              ",".join(fallbacks_flag) if fallbacks_flag else None)
        fallback_list = [] if fallbacks in (None, "none") else [
            r.strip() for r in str(fallbacks).split(",") if r.strip()]
        known = soong.provider.list_regions()
        if known is not None:
            names = {r.name for r in known}
            for name in [region, *fallback_list]:
                if name and name not in names:
                    raise UsageError(f"unknown region {name!r}",
                                     hints=[f"known regions: {', '.join(sorted(names))}"])
        self._values["defaults.region"] = region or None
        self._values["defaults.fallback_regions"] = [r for r in fallback_list if r != region]
        model = self._ask("defaults.model", "Default model (optional)", defaults["model"],
                          self.option("model"))
        self._values["defaults.model"] = None if model in (None, "", "none") else model
        filesystem_key = soong.provider.filesystem_key
        if filesystem_key:
            current = soong.config.get(filesystem_key)
            filesystem = self._ask(filesystem_key, "Filesystem to attach (optional)", current,
                                   self.option("filesystem"))
            self._values[filesystem_key] = None if filesystem in (None, "", "none") else filesystem

    # -- limits ---------------------------------------------------------------------------

    def _limits(self, soong: Soong, types: list[InstanceType]) -> None:
        from soong_core.costs import estimate, format_money

        defaults, budget = soong.config["defaults"], soong.config["budget"]
        gpu = next((t for t in types if t.name == self._values.get("defaults.gpu")), None)
        question = "Lease in hours"
        if gpu is not None:
            question += f" ({format_money(estimate(gpu.price_cents_per_hour, 1))} per hour)"
        hours = _number(self._ask("defaults.lease_hours", question, defaults["lease_hours"],
                                  self.option("hours")),
                        "--hours")
        if gpu is not None and self._interactive():
            self.line(f"  a lease of {hours:g} h costs "
                      f"{format_money(estimate(gpu.price_cents_per_hour, hours))}")
        self._values["defaults.lease_hours"] = hours
        self._values["defaults.idle_timeout_minutes"] = _number(
            self._ask("defaults.idle_timeout_minutes", "Idle timeout in minutes",
                      defaults["idle_timeout_minutes"],
                      self.option("idle-minutes")), "--idle-minutes")
        cap = self._ask("budget.max_dollars", "Budget cap in dollars ('none': no cap)",
                        "none" if budget["max_dollars"] is None else budget["max_dollars"],
                        self.option("budget"))
        self._values["budget.max_dollars"] = None if str(cap) == "none" else _number(cap, "--budget")
        self._values["budget.period"] = self._ask("budget.period",
                                                  "Budget period (day, week, month, none)",
                                                  budget["period"], self.option("budget-period"))


def _number(value: Any, flag: str) -> float | int:
    from soong_core.numbers import parse_number

    try:
        return parse_number(value, flag)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _same(value: Any, config: Config, key: str) -> bool:
    """Whether ``value`` is what ``config`` already gives at ``key``."""
    from soong_core.config import same_value

    return same_value(value, config.get(key))

