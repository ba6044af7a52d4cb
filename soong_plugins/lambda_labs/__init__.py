"""Built-in plugin ``lambda_labs``: the Lambda Cloud provider and its simulator."""
