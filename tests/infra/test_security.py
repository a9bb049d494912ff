"""Fine-grained assertions for every security property the stacks promise."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match

from tests.infra.resolved import PROMOTION_TAG, only, role_statements, stage_templates

STAGES = ["dev", "prod"]


def _resources(template, type_name):
    found = template.find_resources(type_name)
    assert found, f"no {type_name}"
    return list(found.values())


def _policy_statements(template):
    for policy in template.find_resources("AWS::IAM::Policy").values():
        yield from policy["Properties"]["PolicyDocument"]["Statement"]


# --- OpenSearch domain ----------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_domain_is_2_19_with_fgac_and_encryption_everywhere(templates, stage):
    (domain,) = _resources(templates[(stage, "search")], "AWS::OpenSearchService::Domain")
    props = domain["Properties"]
    assert props["EngineVersion"] == "OpenSearch_2.19"
    assert props["EncryptionAtRestOptions"]["Enabled"] is True
    assert "KmsKeyId" in props["EncryptionAtRestOptions"]
    assert props["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    assert props["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert props["DomainEndpointOptions"]["TLSSecurityPolicy"] == "Policy-Min-TLS-1-2-2019-07"
    fgac = props["AdvancedSecurityOptions"]
    assert fgac["Enabled"] is True and fgac["InternalUserDatabaseEnabled"] is False
    assert "MasterUserARN" in fgac["MasterUserOptions"]  # an IAM role, not a password


@pytest.mark.parametrize("stage", STAGES)
def test_domain_logs_all_four_kinds_to_cloudwatch(templates, stage):
    template = templates[(stage, "search")]
    (domain,) = _resources(template, "AWS::OpenSearchService::Domain")
    logs = domain["Properties"]["LogPublishingOptions"]
    assert set(logs) == {"SEARCH_SLOW_LOGS", "INDEX_SLOW_LOGS", "ES_APPLICATION_LOGS", "AUDIT_LOGS"}
    assert all(v["Enabled"] is True for v in logs.values())
    groups = template.find_resources("AWS::Logs::LogGroup")
    for option in logs.values():
        logical_id = option["CloudWatchLogsLogGroupArn"]["Fn::GetAtt"][0]
        assert "KmsKeyId" in groups[logical_id]["Properties"], "domain log groups are encrypted with the stage key"


@pytest.mark.parametrize("stage", STAGES)
def test_domain_access_policy_has_no_anonymous_principal(templates, stage):
    (domain,) = _resources(templates[(stage, "search")], "AWS::OpenSearchService::Domain")
    statements = domain["Properties"]["AccessPolicies"]["Statement"]
    assert statements
    for s in statements:
        principal = json.dumps(s["Principal"])
        assert s["Effect"] == "Allow"
        assert principal != '"*"' and '{"AWS": "*"}' not in principal
        assert ":root" in principal  # this account's principals; FGAC decides per request


def test_dev_domain_is_one_small_node(templates):
    (domain,) = _resources(templates[("dev", "search")], "AWS::OpenSearchService::Domain")
    cluster = domain["Properties"]["ClusterConfig"]
    assert cluster["InstanceCount"] == 1
    assert cluster["InstanceType"] == "t3.medium.search"
    assert cluster["DedicatedMasterEnabled"] is False
    assert cluster["ZoneAwarenessEnabled"] is False


def test_prod_domain_spans_three_zones_with_dedicated_masters(templates):
    (domain,) = _resources(templates[("prod", "search")], "AWS::OpenSearchService::Domain")
    cluster = domain["Properties"]["ClusterConfig"]
    assert cluster["InstanceCount"] == 3
    assert cluster["ZoneAwarenessEnabled"] is True
    assert cluster["ZoneAwarenessConfig"] == {"AvailabilityZoneCount": 3}
    assert cluster["DedicatedMasterEnabled"] is True and cluster["DedicatedMasterCount"] == 3


# --- IAM ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_connector_role_trusts_opensearch_and_invokes_only_its_endpoint(templates, app, stage):
    template = templates[(stage, "search")]
    roles = template.find_resources("AWS::IAM::Role", {"Properties": {"Description": Match.string_like_regexp(
        "ml-commons connector")}})
    (role_id, role), = roles.items()
    services = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]
    assert sorted(services) == ["es.amazonaws.com", "opensearchservice.amazonaws.com"]
    invoke = [s for s in _policy_statements(template) if s["Action"] == "sagemaker:InvokeEndpoint"]
    assert len(invoke) == 1
    # The endpoint the model stack deploys now, as the search stack reads its name from SSM.
    for tag in (None, PROMOTION_TAG):
        resolved = stage_templates(app, stage, promotion_tag=tag)
        endpoint = only(resolved, f"semsearch-{stage}-model", "AWS::SageMaker::Endpoint")["EndpointName"]
        assert endpoint.startswith(f"semsearch-{stage}-{'cpu' if stage == 'dev' else 'gpu'}-")
        assert endpoint.endswith(f"-{PROMOTION_TAG}") == (tag is not None)
        (statement,) = [s for s in role_statements(resolved, f"semsearch-{stage}-search", "ConnectorRole")
                        if s["Action"] == "sagemaker:InvokeEndpoint"]
        assert statement["Resource"] == f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{endpoint}"
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            assert all(s["Action"] == "sagemaker:InvokeEndpoint" for s in policy["Properties"]["PolicyDocument"]["Statement"])


@pytest.mark.parametrize("stage", STAGES)
def test_glue_role_can_pass_only_the_connector_role_and_call_only_the_domain(templates, stage):
    template = templates[(stage, "search")]
    glue_policies = [p for p in template.find_resources("AWS::IAM::Policy").values()
                     if any("GlueRole" in r.get("Ref", "") for r in p["Properties"]["Roles"])]
    statements = [s for p in glue_policies for s in p["Properties"]["PolicyDocument"]["Statement"]]
    pass_role = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert len(pass_role) == 1
    assert "Connector" in json.dumps(pass_role[0]["Resource"]) and "*" not in json.dumps(pass_role[0]["Resource"])
    http = [s for s in statements if s["Action"] == "es:ESHttp*"]
    assert len(http) == 1
    assert all("SearchDomain" in json.dumps(r) for r in http[0]["Resource"])
    # Besides: retiring an old model version's endpoint (search_glue/serving.py), this stage's names only.
    retire = [s for s in statements if s not in pass_role and s not in http]
    assert sorted(a for s in retire for a in s["Action"]) == [
        "sagemaker:DeleteEndpoint", "sagemaker:DeleteInferenceComponent", "sagemaker:DescribeEndpoint",
        "sagemaker:DescribeInferenceComponent"]
    assert all(":sagemaker:" in json.dumps(s["Resource"]) and f"/semsearch-{stage}-*" in json.dumps(s["Resource"])
               for s in retire)


@pytest.mark.parametrize("stage", STAGES)
def test_no_policy_allows_star_actions(templates, stage):
    for kind in ("storage", "model", "search", "jobs"):
        for s in _policy_statements(templates[(stage, kind)]):
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert "*" not in actions and not any(a.endswith(":*") for a in actions), s


# --- Endpoints ------------------------------------------------------------------------------


def _endpoint_config(template):
    (config,) = _resources(template, "AWS::SageMaker::EndpointConfig")
    return config["Properties"]


def test_dev_endpoint_is_tei_on_c6i_with_a_kms_volume_key(templates, app):
    template = templates[("dev", "model")]
    props = _endpoint_config(template)
    assert props["ProductionVariants"][0]["InstanceType"] == "ml.c6i.xlarge"
    assert "KmsKeyId" in props, "c6i has EBS volumes: encrypt them with the stage key"
    (model,) = _resources(template, "AWS::SageMaker::Model")
    container = model["Properties"]["PrimaryContainer"]
    assert container["Image"] == {"Fn::FindInMap": ["ImageHuggingfaceTeiCpu182", {"Ref": "AWS::Region"}, "uri"]}
    environment = {"HF_MODEL_ID": "sentence-transformers/all-MiniLM-L6-v2", "POOLING": "mean",
                   "MAX_BATCH_TOKENS": "16384", "MAX_CLIENT_BATCH_SIZE": "32", "AUTO_TRUNCATE": "true"}
    # From the Hub; after a promotion, the tuned weights SageMaker unpacks from S3.
    for tag, model_id in ((None, environment["HF_MODEL_ID"]), (PROMOTION_TAG, "/opt/ml/model")):
        resolved = only(stage_templates(app, "dev", promotion_tag=tag), "semsearch-dev-model", "AWS::SageMaker::Model")
        assert resolved["PrimaryContainer"]["Environment"] == {**environment, "HF_MODEL_ID": model_id}


def test_prod_endpoint_is_tei_gpu_on_g5_without_a_volume_key(templates):
    template = templates[("prod", "model")]
    props = _endpoint_config(template)
    assert props["ProductionVariants"][0]["InstanceType"] == "ml.g5.xlarge"
    assert "KmsKeyId" not in props, "SageMaker rejects volume keys on g5 (local NVMe)"
    (model,) = _resources(template, "AWS::SageMaker::Model")
    image = model["Properties"]["PrimaryContainer"]["Image"]
    assert image["Fn::FindInMap"][0] == "ImageHuggingfaceTei182"


@pytest.mark.parametrize("stage", STAGES)
def test_image_mapping_covers_many_regions_with_pinned_tei(templates, stage):
    mappings = templates[(stage, "model")].to_json()["Mappings"]
    (mapping,) = [m for name, m in mappings.items() if name.startswith("ImageHuggingfaceTei")]
    assert {"us-east-1", "eu-west-1", "ap-southeast-2"} <= set(mapping)
    assert all("tei1.8.2" in v["uri"] for v in mapping.values())
    gpu = stage == "prod"
    assert all(("-gpu-" in v["uri"]) == gpu for v in mapping.values())


@pytest.mark.parametrize("stage,minimum,maximum", [("dev", 1, 2), ("prod", 2, 6)])
def test_endpoint_autoscaling_tracks_invocations_per_instance(templates, stage, minimum, maximum):
    template = templates[(stage, "model")]
    (target,) = _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert target["Properties"]["MinCapacity"] == minimum
    assert target["Properties"]["MaxCapacity"] == maximum
    assert target["Properties"]["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    (policy,) = _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    tracking = policy["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"


@pytest.mark.parametrize("stage", STAGES)
def test_endpoint_alarms_on_latency_and_errors(templates, stage):
    alarms = _resources(templates[(stage, "model")], "AWS::CloudWatch::Alarm")
    metrics = {(a["Properties"]["MetricName"], a["Properties"].get("ExtendedStatistic") or a["Properties"].get("Statistic"))
               for a in alarms}
    assert {("ModelLatency", "p99"), ("Invocation5XXErrors", "Sum"), ("Invocation4XXErrors", "Sum")} <= metrics


@pytest.mark.parametrize("stage", STAGES)
def test_endpoint_role_pulls_only_its_image_repository(templates, stage):
    statements = [s for s in _policy_statements(templates[(stage, "model")]) if "ecr:BatchGetImage" in s["Action"]]
    assert len(statements) == 1
    resource = json.dumps(statements[0]["Resource"])
    assert "repository/tei" in resource and "ecr:*" not in resource


# --- Storage --------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_buckets_block_public_access_and_require_tls(templates, stage):
    template = templates[(stage, "storage")]
    for bucket in _resources(template, "AWS::S3::Bucket"):
        assert bucket["Properties"]["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    for policy in _resources(template, "AWS::S3::BucketPolicy"):
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


@pytest.mark.parametrize("stage", STAGES)
def test_key_rotates(templates, stage):
    (key,) = _resources(templates[(stage, "storage")], "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True


def test_prod_keeps_data_on_delete_and_dev_does_not(templates):
    prod = _resources(templates[("prod", "storage")], "AWS::KMS::Key")[0]
    dev = _resources(templates[("dev", "storage")], "AWS::KMS::Key")[0]
    assert prod["DeletionPolicy"] == "Retain"
    assert dev["DeletionPolicy"] == "Delete"
