"""The CDK app's stacks and the constructs they assemble."""
