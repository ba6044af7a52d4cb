"""The spec's operations under ``/api/v1``, each mapped to the cloud's method.

Spellings are the spec's, including its inconsistencies: ``GET /file-systems`` but
``POST``/``DELETE /filesystems``. ``tests/simulator`` checks that every operation of the
spec is routed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from soong_plugins.lambda_labs.simulator.routes import Call, Handler, Route

if TYPE_CHECKING:
    from soong_plugins.lambda_labs.simulator.cloud import Cloud

PREFIX = "/api/v1"


def _route(method: str, path: str, operation: str, handler: Handler) -> Route:
    return Route(method, PREFIX + path, handler, operation)


def _cloud(call: Call) -> Cloud:
    return call.simulator.cloud


def _account(call: Call) -> str:
    """The simulated account's id, which audit events name as the resources' owner."""
    return call.simulator.store.account_id()


ROUTES: list[Route] = [
    _route("GET", "/instances", "listInstances",
           lambda c: _cloud(c).list_instances(c.query.get("cluster_id"))),
    _route("GET", "/instances/{id}", "getInstance",
           lambda c: _cloud(c).get_instance(c.params["id"])),
    _route("POST", "/instances/{id}", "postInstance",
           lambda c: _cloud(c).rename_instance(c.params["id"], c.body())),
    _route("GET", "/instance-types", "listInstanceTypes",
           lambda c: _cloud(c).list_instance_types()),
    _route("POST", "/instance-operations/launch", "launchInstance",
           lambda c: _cloud(c).launch(c.body(), account_id=_account(c))),
    _route("POST", "/instance-operations/restart", "restartInstance",
           lambda c: _cloud(c).restart(c.body())),
    _route("POST", "/instance-operations/terminate", "terminateInstance",
           lambda c: _cloud(c).terminate(c.body(), account_id=_account(c))),
    _route("GET", "/ssh-keys", "listSSHKeys", lambda c: _cloud(c).list_ssh_keys()),
    _route("POST", "/ssh-keys", "addSSHKey", lambda c: _cloud(c).add_ssh_key(c.body())),
    _route("DELETE", "/ssh-keys/{id}", "deleteSSHKey",
           lambda c: _cloud(c).delete_ssh_key(c.params["id"])),
    _route("GET", "/file-systems", "listFilesystems", lambda c: _cloud(c).list_filesystems()),
    _route("POST", "/filesystems", "createFilesystem",
           lambda c: _cloud(c).create_filesystem(c.body())),
    _route("DELETE", "/filesystems/{id}", "filesystemDelete",
           lambda c: _cloud(c).delete_filesystem(c.params["id"])),
    _route("GET", "/images", "listImages", lambda c: _cloud(c).list_images()),
    _route("GET", "/firewall-rules", "firewallRulesList",
           lambda c: _cloud(c).get_firewall_rules()),
    _route("PUT", "/firewall-rules", "firewallRulesSet",
           lambda c: _cloud(c).put_firewall_rules(c.body())),
    _route("GET", "/firewall-rulesets", "firewallRulesetsList",
           lambda c: _cloud(c).list_firewall_rulesets()),
    _route("POST", "/firewall-rulesets", "createFirewallRuleset",
           lambda c: _cloud(c).create_firewall_ruleset(c.body())),
    _route("GET", "/firewall-rulesets/global", "getGlobalFirewallRuleset",
           lambda c: _cloud(c).get_global_firewall_ruleset()),
    _route("PATCH", "/firewall-rulesets/global", "updateGlobalFirewallRuleset",
           lambda c: _cloud(c).patch_global_firewall_ruleset(c.body())),
    _route("GET", "/firewall-rulesets/{id}", "getFirewallRuleset",
           lambda c: _cloud(c).get_firewall_ruleset(c.params["id"])),
    _route("PATCH", "/firewall-rulesets/{id}", "updateFirewallRuleset",
           lambda c: _cloud(c).patch_firewall_ruleset(c.params["id"], c.body())),
    _route("DELETE", "/firewall-rulesets/{id}", "deleteFirewallRuleset",
           lambda c: _cloud(c).delete_firewall_ruleset(c.params["id"])),
    _route("GET", "/audit-events", "getAuditEvents", lambda c: _cloud(c).audit_events(c.query)),
]

LAUNCH_OPERATION = "launchInstance"
