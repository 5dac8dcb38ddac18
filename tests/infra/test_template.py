"""infra/template.yaml against the linters and against the code.

What the code expects of a deployment comes from `convo-local manifest`
(table and queue definitions from adapters/aws/src/resources.rs, routes
from the local gateway, environment variables from AwsSettings), so the
template is compared with the code itself, not with a copy in this file.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import stack  # noqa: E402

ROOT = stack.ROOT
TEMPLATE = stack.TEMPLATE
VENV = ROOT / ".venv" / "bin"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
BIN = os.environ.get("CONVO_LOCAL_BIN", str(ROOT / "target" / "debug" / "convo-local"))


@pytest.fixture(scope="module")
def template() -> dict:
    return stack.load_template()


@pytest.fixture(scope="module")
def manifest() -> dict:
    out = subprocess.run([BIN, "manifest"], capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def functions(template: dict) -> dict[str, dict]:
    """Package name -> the function's properties."""
    found = {}
    for rid, res in template["Resources"].items():
        if res["Type"] == "AWS::Serverless::Function":
            package = Path(res["Properties"]["CodeUri"]).name
            found[package] = {"id": rid, **res}
    return found


def subst(value, stack_name: str):
    """A Fn::Sub of pseudo parameters only, with AWS::StackName set."""
    if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
        text = value["Fn::Sub"].replace("${AWS::StackName}", stack_name)
        assert "${" not in text, f"unexpected reference in {value}"
        return text
    if isinstance(value, dict) and value == {"Ref": "AWS::StackName"}:
        return stack_name
    return value


# --------------------------------------------------------------------------
# linters


def test_cfn_lint_passes_with_no_rule_ignored():
    text = TEMPLATE.read_text()
    assert "cfn-lint" not in text, "the template must not silence cfn-lint rules"
    run = subprocess.run([VENV / "cfn-lint", "--version"], capture_output=True, text=True)
    assert run.stdout.strip() == "cfn-lint 1.53.3", run.stdout
    run = subprocess.run([VENV / "cfn-lint", str(TEMPLATE)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_cfn_lint_runs_the_sam_translator(tmp_path):
    # A misspelt property of a SAM event is only seen after the transform:
    # proof that this cfn-lint checks SAM, not only plain CloudFormation.
    broken = TEMPLATE.read_text().replace("Queue: !GetAtt WritesQueue.Arn", "Queu: !GetAtt WritesQueue.Arn", 1)
    path = tmp_path / "template.yaml"
    path.write_text(broken)
    run = subprocess.run([VENV / "cfn-lint", str(path)], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "Queu" in run.stdout


@pytest.mark.parametrize("console", ["default", "Console=true"])
def test_checkov_passes_and_every_skip_is_justified(console, tmp_path):
    config = ROOT / "infra" / ".checkov.yaml"
    lines = config.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*CKV", line):
            assert lines[i - 1].strip().startswith("#"), f"skip without a reason: {line.strip()}"
    if not CHECKOV.exists():
        pytest.fail(f"checkov not installed at {CHECKOV} (tests/run installs it)")
    path = TEMPLATE
    if console != "default":
        # checkov leaves out the resources whose condition is false with the
        # parameters' defaults: the console's are checked with it on.
        off = 'Console:\n    Type: String\n    Default: "false"'
        text = TEMPLATE.read_text()
        assert text.count(off) == 1
        path = tmp_path / "template.yaml"
        path.write_text(text.replace(off, off.replace('"false"', '"true"')))
    # Passed checks listed too (no --quiet) with the console: proof that
    # its resources were scanned.
    quiet = ["--quiet"] if console == "default" else []
    run = subprocess.run(
        [CHECKOV, "--config-file", config, "-f", path, "--skip-download", "--compact", *quiet],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    if console != "default":
        for resource in ("AWS::S3::Bucket.ConsoleBucket", "AWS::CloudFront::Distribution.ConsoleDistribution"):
            assert f"PASSED for resource: {resource}" in run.stdout, resource


# --------------------------------------------------------------------------
# the template against the code


def test_table_matches_the_code(template, manifest):
    table = template["Resources"]["Table"]["Properties"]
    expected = manifest["table"]["properties"]
    for key in ("BillingMode", "KeySchema", "GlobalSecondaryIndexes", "TimeToLiveSpecification"):
        assert table[key] == expected[key], key
    by_name = lambda defs: sorted(defs, key=lambda d: d["AttributeName"])  # noqa: E731
    assert by_name(table["AttributeDefinitions"]) == by_name(expected["AttributeDefinitions"])
    assert subst(table["TableName"], "S") == manifest["table"]["name"].replace("{prefix}", "S")


def test_table_is_protected(template):
    table = template["Resources"]["Table"]
    props = table["Properties"]
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "Key"}}
    assert props["DeletionProtectionEnabled"] == {"Ref": "TableDeletionProtection"}
    assert table["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("queue,resource", [("writes", "WritesQueue"), ("titles", "TitlesQueue")])
def test_queues_match_the_code(template, manifest, queue, resource):
    resources = template["Resources"]
    expected = manifest["queues"][queue]
    props = resources[resource]["Properties"]
    assert subst(props["QueueName"], "S") == expected["QueueName"].replace("{prefix}", "S")
    for key in ("VisibilityTimeout", "MessageRetentionPeriod", "FifoQueue", "DeduplicationScope", "FifoThroughputLimit"):
        assert props.get(key) == expected.get(key), key
    redrive = props["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == expected["RedrivePolicy"]["maxReceiveCount"]
    dlq_id = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
    dlq = resources[dlq_id]["Properties"]
    assert subst(dlq["QueueName"], "S") == expected["DeadLetterQueueName"].replace("{prefix}", "S")
    assert dlq["MessageRetentionPeriod"] == expected["DeadLetterMessageRetentionPeriod"]
    assert dlq.get("FifoQueue") == expected.get("FifoQueue")
    for p in (props, dlq):
        assert p["KmsMasterKeyId"] == {"Ref": "Key"}


def test_every_function_package_has_a_function_and_back(template):
    packages = {p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").exists()}
    found = functions(template)
    assert set(found) == packages
    for package, fn in found.items():
        props = fn["Properties"]
        assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
        assert fn["Metadata"]["BuildProperties"]["Binary"] == package
        assert subst(props["FunctionName"], "S") == f"S-{package}"
        assert (ROOT / "infra" / props["CodeUri"]).resolve() == ROOT / "functions" / package
        log_group = template["Resources"][props["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]
        assert subst(log_group["LogGroupName"], "S") == f"/convo/S/{package}"
        assert "RetentionInDays" in log_group
        # Deployed through an alias, rolled back on its own error alarm.
        alarms = props["DeploymentPreference"]["Alarms"]
        assert len(alarms) == 1
        dims = {d["Name"]: subst(d["Value"], "S")
                for d in template["Resources"][alarms[0]["Ref"]]["Properties"]["Dimensions"]}
        assert dims == {"FunctionName": f"S-{package}", "Resource": f"S-{package}:live"}
    glob = template["Globals"]["Function"]
    assert glob["Runtime"] == "provided.al2023"
    assert glob["Architectures"] == ["arm64"]
    assert glob["AutoPublishAlias"] == "live"


def test_environment_matches_what_the_functions_read(template, manifest):
    required = set(manifest["environment"]["required"])
    known = required | set(manifest["environment"]["optional"])
    common = template["Globals"]["Function"]["Environment"]["Variables"]
    for package, fn in functions(template).items():
        env = {**common, **fn["Properties"].get("Environment", {}).get("Variables", {})}
        assert required <= set(env), f"{package} lacks {required - set(env)}"
        assert set(env) <= known, f"{package} sets variables no code reads: {set(env) - known}"
    # The resources behind the required variables, and the outputs that
    # stack.py (and an operator) read them from.
    assert common["CONVO_TABLE"] == {"Ref": "Table"}
    assert common["CONVO_WRITES_QUEUE_URL"] == {"Ref": "WritesQueue"}
    assert common["CONVO_TITLES_QUEUE_URL"] == {"Ref": "TitlesQueue"}
    outputs = template["Outputs"]
    read_api_env = {**common, **functions(template)["read-api"]["Properties"]["Environment"]["Variables"]}
    for var, output in stack.ENV_FROM_OUTPUTS.items():
        assert outputs[output]["Value"] == read_api_env[var], var


def test_routes_match_the_gateway(template, manifest):
    routes = set()
    for package, fn in functions(template).items():
        for event in fn["Properties"].get("Events", {}).values():
            if event["Type"] != "HttpApi":
                continue
            props = event["Properties"]
            assert props["ApiId"] == {"Ref": "Api"}
            auth = props.get("Auth", {}).get("Authorizer") != "NONE"
            routes.add((props["Method"], props["Path"], package, auth))
    expected = {(r["method"], r["path"], r["function"], r["auth"]) for r in manifest["routes"]}
    assert routes == expected


def test_queue_consumers(template, manifest):
    resources = template["Resources"]
    default_timeout = template["Globals"]["Function"]["Timeout"]
    consumed = {}
    for package, fn in functions(template).items():
        for event in fn["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            props = event["Properties"]
            queue_id = props["Queue"]["Fn::GetAtt"][0]
            consumed[queue_id] = package
            queue = resources[queue_id]["Properties"]
            timeout = fn["Properties"].get("Timeout", default_timeout)
            assert queue["VisibilityTimeout"] >= 6 * timeout, f"{queue_id}: visibility < 6 x {package} timeout"
            assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
            assert props["BatchSize"] == manifest["eventSourceBatchSize"]
            assert "MaximumConcurrency" in props["ScalingConfig"]
            if queue.get("FifoQueue"):
                assert "MaximumBatchingWindowInSeconds" not in props, "FIFO event sources take no window"
    assert consumed == {"WritesQueue": "persist-writes", "TitlesQueue": "generate-title"}


def test_function_policies_are_least_privilege(template):
    data = {"Table", "Key", "WritesQueue", "TitlesQueue", "WritesDeadLetterQueue", "TitlesDeadLetterQueue"}
    for package, fn in functions(template).items():
        statements = [s for p in fn["Properties"]["Policies"] for s in p["Statement"]]
        assert statements, package
        for st in statements:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            res = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
            assert st["Effect"] == "Allow"
            for action in actions:
                service, name = action.split(":")
                assert service in {"dynamodb", "sqs", "kms"} and "*" not in name, f"{package}: {action}"
            for r in res:
                assert r != "*" and stack.references(r) <= data, f"{package}: {r}"
            if any(a.startswith("kms:") for a in actions):
                assert "kms:ViaService" in st["Condition"]["StringEquals"], package
        granted = {a for st in statements for a in ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
        # Only the API paths that erase may delete in bulk; nobody scans.
        assert "dynamodb:Scan" not in granted
        if "dynamodb:BatchWriteItem" in granted:
            assert package == "create-conversation"


def test_alarms_cover_dead_letters_age_errors_throttles_and_5xx(template):
    alarms = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    metrics = set()
    for a in alarms:
        if "MetricName" in a:
            metrics.add((a["MetricName"], json.dumps(a["Dimensions"], sort_keys=True)))
        for m in a.get("Metrics", []):
            if "MetricStat" in m:
                metrics.add((m["MetricStat"]["Metric"]["MetricName"], "math"))
        assert a["AlarmActions"] == {"Fn::If": ["CreateAlarmTopic", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]}
    names = {m for m, _ in metrics}
    assert {"Errors", "Throttles", "ApproximateNumberOfMessagesVisible", "ApproximateAgeOfOldestMessage", "5xx"} <= names
    dlq_alarms = [d for m, d in metrics if m == "ApproximateNumberOfMessagesVisible"]
    assert any("WritesDeadLetterQueue" in d for d in dlq_alarms) and any("TitlesDeadLetterQueue" in d for d in dlq_alarms)


# --------------------------------------------------------------------------
# the template's data resources, deployed through moto's CloudFormation


@pytest.fixture(scope="module")
def aws():
    if not os.environ.get("AWS_ENDPOINT_URL"):
        pytest.fail("AWS_ENDPOINT_URL is not set (tests/run starts moto and sets it)")
    return boto3.client("dynamodb"), boto3.client("sqs")


def _table_shape(dynamo, name):
    t = dynamo.describe_table(TableName=name)["Table"]
    return {
        "keys": t["KeySchema"],
        "attributes": sorted((a["AttributeName"], a["AttributeType"]) for a in t["AttributeDefinitions"]),
        "indexes": sorted((g["IndexName"], json.dumps(g["KeySchema"]), g["Projection"]["ProjectionType"])
                          for g in t["GlobalSecondaryIndexes"]),
        "billing": t["BillingModeSummary"]["BillingMode"],
    }


QUEUE_ATTRIBUTES = ["FifoQueue", "DeduplicationScope", "FifoThroughputLimit", "ContentBasedDeduplication",
                    "VisibilityTimeout", "MessageRetentionPeriod"]


def _queue_shape(sqs, name):
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    shape = {k: attrs.get(k) for k in QUEUE_ATTRIBUTES}
    if "RedrivePolicy" in attrs:
        redrive = json.loads(attrs["RedrivePolicy"])
        shape["maxReceiveCount"] = int(redrive["maxReceiveCount"])
        shape["deadLetterTarget"] = redrive["deadLetterTargetArn"].rsplit(":", 1)[1]
    return shape


def test_deployed_resources_equal_what_init_aws_creates(aws):
    """The template's table and queues, created by CloudFormation, against
    those `convo-local init-aws` creates from resources.rs, compared through
    the DynamoDB and SQS APIs. (moto's CloudFormation does not apply TTL,
    PITR or SSE settings; the static tests above check those.)"""
    dynamo, sqs = aws
    suffix = uuid.uuid4().hex[:8]
    deployed, created = f"cfn-{suffix}", f"init-{suffix}"
    stack.deploy(deployed)
    run = subprocess.run([BIN, "init-aws", "--prefix", created], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("CONVO_")})
    assert run.returncode == 0, run.stderr
    assert _table_shape(dynamo, deployed) == _table_shape(dynamo, created)
    for queue in ("writes.fifo", "writes-dlq.fifo", "titles", "titles-dlq"):
        a = _queue_shape(sqs, f"{deployed}-{queue}")
        b = _queue_shape(sqs, f"{created}-{queue}")
        if "deadLetterTarget" in a:
            a["deadLetterTarget"] = a["deadLetterTarget"].replace(deployed, "P")
            b["deadLetterTarget"] = b["deadLetterTarget"].replace(created, "P")
        assert a == b, queue



def test_samconfig_names_only_template_parameters(template):
    import shlex
    import tomllib

    config = tomllib.loads((ROOT / "infra" / "samconfig.toml").read_text())
    deploy = config["default"]["deploy"]["parameters"]
    overrides = dict(pair.split("=", 1) for pair in shlex.split(deploy["parameter_overrides"]))
    assert set(overrides) <= set(template["Parameters"])
    for name, value in overrides.items():
        allowed = template["Parameters"][name].get("AllowedValues")
        assert allowed is None or value in [str(v) for v in allowed], name
    assert config["default"]["build"]["parameters"]["beta_features"] is True  # rust-cargolambda
