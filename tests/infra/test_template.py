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


def event_types() -> set[str]:
    """The event types the code emits (EventType::as_str in
    shared/schema/src/events.rs)."""
    source = (ROOT / "shared" / "schema" / "src" / "events.rs").read_text()
    found = set(re.findall(r'EventType::\w+ => "([a-z]+\.[a-z]+)"', source))
    assert len(found) == 10, found
    return found


def publisher_env() -> set[str]:
    """What publish-events reads besides AwsSettings (its bootstrap in
    adapters/aws/src/lambda.rs; the manifest lists AwsSettings' only)."""
    source = (ROOT / "adapters" / "aws" / "src" / "lambda.rs").read_text()
    body = source.split("pub async fn bootstrap_publisher", 1)[1]
    found = set(re.findall(r'env::var\("(CONVO_[A-Z_]+)"\)', body))
    assert "CONVO_EVENT_BUS" in found, found
    return found


def arn_of(value, stack_name: str = "S") -> str:
    """A Fn::Sub of pseudo parameters, resolved with placeholders."""
    assert isinstance(value, dict) and isinstance(value.get("Fn::Sub"), str), value
    text = value["Fn::Sub"]
    for name, sub in (("AWS::StackName", stack_name), ("AWS::Partition", "aws"),
                      ("AWS::Region", "r"), ("AWS::AccountId", "1")):
        text = text.replace("${" + name + "}", sub)
    assert "${" not in text, f"unexpected reference in {value}"
    return text


def statements(fn: dict) -> list[dict]:
    return [s for p in fn["Properties"]["Policies"] for s in p["Statement"]]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


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


# checkov leaves out the resources whose condition is false with the
# parameters' defaults: the optional ones are checked with them on.
CHECKOV_VARIANTS = {
    "default": ([], []),
    "Console=true": (
        [('Console:\n    Type: String\n    Default: "false"', 'Console:\n    Type: String\n    Default: "true"')],
        ["AWS::S3::Bucket.ConsoleBucket", "AWS::CloudFront::Distribution.ConsoleDistribution"],
    ),
    "SafetyAlertEmail,EventsToQueue=true": (
        [('SafetyAlertEmail:\n    Type: String\n    Default: ""',
          'SafetyAlertEmail:\n    Type: String\n    Default: "alerts@example.com"'),
         ('EventsToQueue:\n    Type: String\n    Default: "false"',
          'EventsToQueue:\n    Type: String\n    Default: "true"')],
        ["AWS::SNS::Topic.SafetyAlertsTopic", "AWS::SQS::Queue.SafetyAlertsDeadLetterQueue",
         "AWS::SQS::Queue.IntegrationEventsQueue", "AWS::SQS::Queue.IntegrationEventsDeadLetterQueue"],
    ),
}


@pytest.mark.parametrize("variant", list(CHECKOV_VARIANTS))
def test_checkov_passes_and_every_skip_is_justified(variant, tmp_path):
    config = ROOT / "infra" / ".checkov.yaml"
    lines = config.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*-\s*CKV", line):
            assert lines[i - 1].strip().startswith("#"), f"skip without a reason: {line.strip()}"
    if not CHECKOV.exists():
        pytest.fail(f"checkov not installed at {CHECKOV} (tests/run installs it)")
    path = TEMPLATE
    replacements, scanned = CHECKOV_VARIANTS[variant]
    if replacements:
        text = TEMPLATE.read_text()
        for off, on in replacements:
            assert text.count(off) == 1, off
            text = text.replace(off, on)
        path = tmp_path / "template.yaml"
        path.write_text(text)
    # Passed checks listed too (no --quiet) with the options on: proof that
    # their resources were scanned.
    quiet = [] if scanned else ["--quiet"]
    run = subprocess.run(
        [CHECKOV, "--config-file", config, "-f", path, "--skip-download", "--compact", *quiet],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for resource in scanned:
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


@pytest.mark.parametrize("queue,resource", [("writes", "WritesQueue"), ("titles", "TitlesQueue"),
                                            ("events", "EventsQueue")])
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
    # publish-events reads its bus (and source) instead of AwsSettings; the
    # Globals give it those too, as to every function.
    publisher = publisher_env()
    common = template["Globals"]["Function"]["Environment"]["Variables"]
    for package, fn in functions(template).items():
        own = fn["Properties"].get("Environment", {}).get("Variables", {})
        env = {**common, **own}
        assert required <= set(env), f"{package} lacks {required - set(env)}"
        reads = known | publisher if package == "publish-events" else known
        assert set(env) <= reads, f"{package} sets variables no code reads: {set(env) - reads}"
        if package == "publish-events":
            assert own["CONVO_EVENT_BUS"] == {"Ref": "EventBus"}
        else:
            assert not set(own) & publisher, package
    # The resources behind the required variables, and the outputs that
    # stack.py (and an operator) read them from.
    assert common["CONVO_TABLE"] == {"Ref": "Table"}
    assert common["CONVO_WRITES_QUEUE_URL"] == {"Ref": "WritesQueue"}
    assert common["CONVO_TITLES_QUEUE_URL"] == {"Ref": "TitlesQueue"}
    assert common["CONVO_EVENTS_QUEUE_URL"] == {"Ref": "EventsQueue"}
    assert common["CONVO_KEYS_TABLE"] == {"Ref": "KeysTable"}
    assert common["CONVO_KMS_KEY_ID"] == {"Fn::GetAtt": ["Key", "Arn"]}
    assert set(stack.ENV_FROM_OUTPUTS) == {v for v in known if v.endswith("_URL")} | {
        "CONVO_TABLE", "CONVO_KEYS_TABLE", "CONVO_KMS_KEY_ID"}
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
    assert consumed == {"WritesQueue": "persist-writes", "TitlesQueue": "generate-title",
                        "EventsQueue": "publish-events"}


def is_data_key_statement(st: dict) -> bool:
    """A kms statement for the users' data keys (called by the function
    itself, conditioned on the encryption context), as opposed to one for
    the SSE of the tables and queues (kms:ViaService)."""
    return any(a.startswith("kms:") for a in as_list(st["Action"])) \
        and "kms:ViaService" not in st.get("Condition", {}).get("StringEquals", {})


def test_function_policies_are_least_privilege(template):
    data = {"Table", "KeysTable", "Key", "WritesQueue", "TitlesQueue", "EventsQueue", "WritesDeadLetterQueue",
            "TitlesDeadLetterQueue", "EventsDeadLetterQueue", "EventBus"}
    sends_events = set()
    for package, fn in functions(template).items():
        sts = statements(fn)
        assert sts, package
        # Sending or receiving (not GetQueueAttributes) uses the key.
        queues = False
        for st in sts:
            actions = as_list(st["Action"])
            res = as_list(st["Resource"])
            assert st["Effect"] == "Allow"
            for action in actions:
                service, name = action.split(":")
                assert service in {"dynamodb", "sqs", "kms", "events"} and "*" not in name, f"{package}: {action}"
                queues |= service == "sqs" and name != "GetQueueAttributes"
            for r in res:
                assert r != "*" and stack.references(r) <= data, f"{package}: {r}"
            if is_data_key_statement(st):
                # The data keys' own statement (test_data_keys_are_made_and_
                # opened_for_one_owner_and_user_only checks it in full).
                assert st.get("Condition") == DATA_KEY_CONDITION, package
            elif any(a.startswith("kms:") for a in actions):
                via = as_list(st["Condition"]["StringEquals"]["kms:ViaService"])
                assert all(v["Fn::Sub"].split(".")[0] in {"dynamodb", "sqs"} for v in via), package
            if "sqs:SendMessage" in actions and {"Fn::GetAtt": ["EventsQueue", "Arn"]} in res:
                sends_events.add(package)
        # A function that reaches an (encrypted) queue may use the key
        # through SQS.
        kms_via = {v["Fn::Sub"] for st in sts if any(a.startswith("kms:") for a in as_list(st["Action"]))
                   and not is_data_key_statement(st)
                   for v in as_list(st["Condition"]["StringEquals"]["kms:ViaService"])}
        assert queues == ("sqs.${AWS::Region}.amazonaws.com" in kms_via), package
        granted = {a for st in sts for a in as_list(st["Action"])}
        # Only erasures (the API's, and the worker finishing one at its
        # guard) may delete in bulk; nobody scans.
        assert "dynamodb:Scan" not in granted
        if "dynamodb:BatchWriteItem" in granted:
            assert package in {"create-conversation", "persist-writes"}, package
        # Only publish-events reaches the bus, and it reaches nothing else.
        if package == "publish-events":
            assert not any(a.startswith("dynamodb:") for a in granted)
            assert "sqs:SendMessage" not in granted
        else:
            assert not any(a.startswith("events:") for a in granted), package
    # The functions that commit changes queue their events.
    assert sends_events == {"create-conversation", "persist-writes", "generate-title"}


def test_erasure_grants_the_worker_what_the_api_has(template):
    """persist-writes finishes an erasure at its guard with the same store
    calls as the API (delete_conversation_items: Query + BatchWriteItem;
    remove_conversation: a transaction of DeleteItem + UpdateItem;
    recounting the user's last conversation: Query of byUser, BatchGetItem,
    GetItem, UpdateItem)."""
    fns = functions(template)
    erasure = {"dynamodb:Query", "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem",
               "dynamodb:DeleteItem", "dynamodb:UpdateItem"}

    def grants(package):
        out = set()
        for st in statements(fns[package]):
            for a in as_list(st["Action"]):
                for r in as_list(st["Resource"]):
                    out.add((a, json.dumps(r, sort_keys=True)))
        return out

    table = json.dumps({"Fn::GetAtt": ["Table", "Arn"]}, sort_keys=True)
    by_user = json.dumps({"Fn::Sub": "${Table.Arn}/index/byUser"}, sort_keys=True)
    for package in ("create-conversation", "persist-writes"):
        g = grants(package)
        assert {(a, table) for a in erasure} <= g, package
        assert ("dynamodb:Query", by_user) in g, package
    # The API's erasure queues its guard in the writes queue.
    assert ("sqs:SendMessage", json.dumps({"Fn::GetAtt": ["WritesQueue", "Arn"]}, sort_keys=True)) \
        in grants("create-conversation")


def test_health_reads_every_queue(template):
    st = next(s for s in statements(functions(template)["read-api"]) if s["Sid"] == "HealthOfTheQueues")
    queues = {r["Fn::GetAtt"][0] for r in st["Resource"]}
    assert queues == {"WritesQueue", "WritesDeadLetterQueue", "TitlesQueue", "TitlesDeadLetterQueue",
                      "EventsQueue", "EventsDeadLetterQueue"}
    assert as_list(st["Action"]) == ["sqs:GetQueueAttributes"]
    env = functions(template)["read-api"]["Properties"]["Environment"]["Variables"]
    assert env["CONVO_EVENTS_DLQ_URL"] == {"Ref": "EventsDeadLetterQueue"}


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
    # Every dead-letter queue (of a queue, or of a rule's target) pages, and
    # so does a queue of the functions whose oldest record grows old.
    resources = template["Resources"]
    dlqs = {rid for rid, r in resources.items() if r["Type"] == "AWS::SQS::Queue" and "DeadLetter" in rid}
    assert {"WritesDeadLetterQueue", "TitlesDeadLetterQueue", "EventsDeadLetterQueue"} <= dlqs
    for rid, r in resources.items():
        if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in r["Properties"]:
            assert r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0] in dlqs
        if r["Type"] == "AWS::Events::Rule":
            for target in r["Properties"]["Targets"]:
                assert target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0] in dlqs, rid
    for dlq in dlqs:
        alarms_of = [rid for rid, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"
                     and r["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
                     and r["Properties"]["Dimensions"] == [{"Name": "QueueName",
                                                             "Value": {"Fn::GetAtt": [dlq, "QueueName"]}}]]
        assert alarms_of, f"no alarm on {dlq}"
        # An optional queue's alarm comes and goes with it.
        assert all(resources[a].get("Condition") == resources[dlq].get("Condition") for a in alarms_of), dlq
    aged = {json.loads(d)[0]["Value"]["Fn::GetAtt"][0] for m, d in metrics
            if m == "ApproximateAgeOfOldestMessage" and d != "math"}
    assert aged == {"WritesQueue", "TitlesQueue", "EventsQueue"}
    # Throttles of every function.
    throttles = next(a for a in alarms if any(m.get("MetricStat", {}).get("Metric", {}).get("MetricName")
                                              == "Throttles" for m in a.get("Metrics", [])))
    watched = {subst(m["MetricStat"]["Metric"]["Dimensions"][0]["Value"], "S")
               for m in throttles["Metrics"] if "MetricStat" in m}
    assert watched == {f"S-{package}" for package in functions(template)}


# --------------------------------------------------------------------------
# the key table: each user's data key, wrapped (envelope encryption,
# crypto-shredding)

# Which functions may reach the key table, and how: create-conversation
# makes a user's key and deletes it at the user's erasure; the functions
# that read or write what users wrote only read one; the others never see
# clear text and cannot reach a key.
KEY_TABLE_ACTIONS = {
    "create-conversation": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem"},
    "append-message": {"dynamodb:GetItem"},
    "read-api": {"dynamodb:GetItem"},
    "generate-title": {"dynamodb:GetItem"},
    "end-session": set(),
    "persist-writes": set(),
    "publish-events": set(),
    "sweep-sessions": set(),
}

# What each function may do with the stack's key itself (not through
# DynamoDB or SQS): make data keys, open them.
DATA_KEY_ACTIONS = {
    "create-conversation": {"kms:GenerateDataKey", "kms:Decrypt"},
    "append-message": {"kms:Decrypt"},
    "read-api": {"kms:Decrypt"},
    "generate-title": {"kms:Decrypt"},
    "end-session": set(),
    "persist-writes": set(),
    "publish-events": set(),
    "sweep-sessions": set(),
}

# Only calls whose encryption context is exactly {owner, user}: every key
# named is one of the two (ForAllValues), and both are there (Null false;
# ForAllValues alone also holds for a call with no context at all).
DATA_KEY_CONDITION = {
    "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["owner", "user"]},
    "Null": {"kms:EncryptionContext:owner": "false", "kms:EncryptionContext:user": "false"},
}


def test_key_table_matches_the_code(template, manifest):
    expected = manifest["keyTable"]
    table = template["Resources"]["KeysTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    assert "Condition" not in table
    props = table["Properties"]
    assert subst(props["TableName"], "S") == expected["name"].replace("{prefix}", "S") == "S-keys"
    by_name = lambda defs: sorted(defs, key=lambda d: d["AttributeName"])  # noqa: E731
    for key, value in expected["properties"].items():
        if key == "AttributeDefinitions":
            assert by_name(props[key]) == by_name(value), key
        else:
            assert props[key] == value, key
    # Nothing the code does not have (no index, TTL or stream), but the
    # name and the encryption.
    assert set(props) == set(expected["properties"]) | {"TableName", "SSESpecification"}
    assert template["Outputs"]["KeysTableName"]["Value"] == {"Ref": "KeysTable"}
    assert stack.ENV_FROM_OUTPUTS["CONVO_KEYS_TABLE"] == "KeysTableName"
    assert stack.ENV_FROM_OUTPUTS["CONVO_KMS_KEY_ID"] == "KeyArn"
    assert template["Outputs"]["KeyArn"]["Value"] == {"Fn::GetAtt": ["Key", "Arn"]}


def test_key_table_keeps_no_backups_and_is_protected(template):
    """No point-in-time recovery: its backups would keep the keys that
    erasures destroy. Deletion protection, Retain and the stack's key
    instead; checkov's PITR check is skipped on this table only, with a
    reason."""
    table = template["Resources"]["KeysTable"]
    props = table["Properties"]
    assert "PointInTimeRecoverySpecification" not in props
    assert "TimeToLiveSpecification" not in props
    assert "StreamSpecification" not in props
    assert props["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == "Retain"
    assert table["UpdateReplacePolicy"] == "Retain"
    assert props["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "Key"}}
    [skip] = table["Metadata"]["checkov"]["skip"]
    assert skip["id"] == "CKV_AWS_28"
    assert "backup" in skip["comment"].lower()
    # ... and no backup made any other way.
    assert not any(r["Type"].startswith("AWS::Backup::") for r in template["Resources"].values())
    # The checkov config does not skip it globally (the conversation table
    # keeps its point-in-time recovery, and checkov checks that).
    config = (ROOT / "infra" / ".checkov.yaml").read_text()
    assert "CKV_AWS_28" not in config


def test_who_may_touch_the_key_table(template):
    key_table = {"Fn::GetAtt": ["KeysTable", "Arn"]}
    fns = functions(template)
    assert set(fns) == set(KEY_TABLE_ACTIONS)
    for package, fn in fns.items():
        granted = set()
        for st in statements(fn):
            resources = as_list(st["Resource"])
            if not any("KeysTable" in stack.references(r) for r in resources):
                continue
            # The table itself (it has no index), in a statement of its own.
            assert resources == [key_table], package
            granted |= set(as_list(st["Action"]))
        assert granted == KEY_TABLE_ACTIONS[package], package


def test_data_keys_are_made_and_opened_for_one_owner_and_user_only(template):
    key = {"Fn::GetAtt": ["Key", "Arn"]}
    for package, fn in functions(template).items():
        granted = set()
        for st in statements(fn):
            actions = as_list(st["Action"])
            if not any(a.startswith("kms:") for a in actions):
                continue
            # No kms statement without a condition.
            assert st.get("Condition"), package
            assert as_list(st["Resource"]) == [key], package
            if is_data_key_statement(st):
                assert st["Condition"] == DATA_KEY_CONDITION, package
                assert all(a.startswith("kms:") for a in actions), package
                granted |= set(actions)
            else:
                # The SSE statements: through DynamoDB or SQS only, no other
                # condition that could be mistaken for the context's.
                assert set(st["Condition"]) == {"StringEquals"}, package
                assert set(st["Condition"]["StringEquals"]) == {"kms:ViaService"}, package
        assert granted == DATA_KEY_ACTIONS[package], package
    # Whoever opens a data key reads it, and the reverse.
    for package in DATA_KEY_ACTIONS:
        assert bool(DATA_KEY_ACTIONS[package]) == bool(KEY_TABLE_ACTIONS[package]), package
    # The functions that read the key table can also use the table's SSE
    # key through DynamoDB.
    for package, fn in functions(template).items():
        if not KEY_TABLE_ACTIONS[package]:
            continue
        via = {v["Fn::Sub"] for st in statements(fn)
               if any(a == "kms:Decrypt" for a in as_list(st["Action"])) and not is_data_key_statement(st)
               for v in as_list(st["Condition"]["StringEquals"]["kms:ViaService"])}
        assert "dynamodb.${AWS::Region}.amazonaws.com" in via, package


def rust_sources() -> str:
    return "\n".join(p.read_text() for d in ("shared", "adapters", "functions")
                     for p in sorted((ROOT / d).rglob("*.rs")) if "target" not in p.parts)


def test_key_table_alarms(template):
    resources = template["Resources"]
    topic = {"Fn::If": ["CreateAlarmTopic", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]}
    # The operations the functions may make on the key table.
    operations = {a.split(":")[1] for actions in KEY_TABLE_ACTIONS.values() for a in actions}
    for rid, metric in (("KeysTableSystemErrorsAlarm", "SystemErrors"),
                        ("KeysTableThrottlesAlarm", "ThrottledRequests")):
        alarm = resources[rid]
        assert alarm["Type"] == "AWS::CloudWatch::Alarm" and "Condition" not in alarm, rid
        props = alarm["Properties"]
        assert props["AlarmActions"] == topic, rid
        assert (props["ComparisonOperator"], props["Threshold"]) == ("GreaterThanThreshold", 0), rid
        assert props["TreatMissingData"] == "notBreaching", rid
        [total] = [m for m in props["Metrics"] if m.get("ReturnData")]
        parts = [m for m in props["Metrics"] if "MetricStat" in m]
        assert total["Expression"] == "SUM([" + ", ".join(m["Id"] for m in parts) + "])", rid
        watched = set()
        for m in parts:
            stat = m["MetricStat"]
            assert stat["Stat"] == "Sum"
            assert stat["Metric"]["Namespace"] == "AWS/DynamoDB"
            assert stat["Metric"]["MetricName"] == metric
            dims = {d["Name"]: d["Value"] for d in stat["Metric"]["Dimensions"]}
            assert dims["TableName"] == {"Ref": "KeysTable"}
            assert set(dims) == {"TableName", "Operation"}
            watched.add(dims["Operation"])
        assert watched == operations, rid
    # A mass erasure: more than 100 data keys destroyed in an hour, counted
    # by the erasure path (the only function that may delete a key) in the
    # functions' EMF namespace.
    destroyed = resources["KeysDestroyedAlarm"]["Properties"]
    namespace = re.search(r'pub const NAMESPACE: &str = "([^"]+)"',
                          (ROOT / "adapters" / "aws" / "src" / "metrics.rs").read_text())[1]
    assert destroyed["Namespace"] == namespace
    assert destroyed["MetricName"] == "KeysDestroyed"
    [deleter] = [p for p, actions in KEY_TABLE_ACTIONS.items() if "dynamodb:DeleteItem" in actions]
    assert [(d["Name"], subst(d["Value"], "S")) for d in destroyed["Dimensions"]] == [("FunctionName", f"S-{deleter}")]
    assert (destroyed["Statistic"], destroyed["Period"], destroyed["EvaluationPeriods"]) == ("Sum", 3600, 1)
    assert (destroyed["ComparisonOperator"], destroyed["Threshold"]) == ("GreaterThanThreshold", 100)
    assert destroyed["TreatMissingData"] == "notBreaching"
    assert destroyed["AlarmActions"] == topic
    # The code records the metric of that name.
    assert '"KeysDestroyed"' in rust_sources()


# --------------------------------------------------------------------------
# events: the bus, its publisher, the optional rules and their targets


def rule_arn(rule: dict) -> str:
    """A rule's ARN from its name (a rule of a custom bus is
    rule/<bus>/<rule>)."""
    props = rule["Properties"]
    assert props["EventBusName"] == {"Ref": "EventBus"}
    return f"arn:aws:events:r:1:rule/S-events/{subst(props['Name'], 'S')}"


def test_the_event_bus(template):
    resources = template["Resources"]
    bus = resources["EventBus"]
    assert bus["Type"] == "AWS::Events::EventBus"
    assert "Condition" not in bus
    assert subst(bus["Properties"]["Name"], "S") == "S-events"
    outputs = template["Outputs"]
    assert outputs["EventBusName"]["Value"] == {"Ref": "EventBus"}
    assert outputs["EventBusArn"]["Value"] == {"Fn::GetAtt": ["EventBus", "Arn"]}
    # Nothing else may put events on it: no bus policy.
    assert not any(r["Type"] == "AWS::Events::EventBusPolicy" for r in resources.values())


def test_publish_events_puts_convo_events_on_the_bus_only(template):
    fn = functions(template)["publish-events"]
    props = fn["Properties"]
    assert props.get("Timeout", template["Globals"]["Function"]["Timeout"]) == 10
    env = props["Environment"]["Variables"]
    puts = [s for s in statements(fn) if any(a.startswith("events:") for a in as_list(s["Action"]))]
    assert len(puts) == 1
    put = puts[0]
    assert as_list(put["Action"]) == ["events:PutEvents"]
    assert put["Resource"] == {"Fn::GetAtt": ["EventBus", "Arn"]}
    assert put["Condition"] == {"StringEquals": {"events:source": env["CONVO_EVENT_SOURCE"]}}
    drains = [s for s in statements(fn) if any(a.startswith("sqs:") for a in as_list(s["Action"]))]
    assert [d["Resource"] for d in drains] == [{"Fn::GetAtt": ["EventsQueue", "Arn"]}]
    assert set(as_list(drains[0]["Action"])) == {"sqs:ReceiveMessage", "sqs:DeleteMessage",
                                                 "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}
    # It only reads the (encrypted) queue: decrypt, through SQS.
    keys = [s for s in statements(fn) if any(a.startswith("kms:") for a in as_list(s["Action"]))]
    assert [as_list(k["Action"]) for k in keys] == [["kms:Decrypt"]]
    assert keys[0]["Condition"] == {"StringEquals": {"kms:ViaService": {"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}}}


def rules(template) -> dict[str, dict]:
    return {rid: r for rid, r in template["Resources"].items() if r["Type"] == "AWS::Events::Rule"}


def test_the_rules_match_convo_events_of_the_bus(template):
    source = functions(template)["publish-events"]["Properties"]["Environment"]["Variables"]["CONVO_EVENT_SOURCE"]
    found = rules(template)
    assert set(found) == {"SafetyAlertsRule", "IntegrationEventsRule"}
    for rid, rule in found.items():
        props = rule["Properties"]
        assert props["EventBusName"] == {"Ref": "EventBus"}
        assert props["State"] == "ENABLED"
        assert props["EventPattern"]["source"] == [source], rid
        assert set(props["EventPattern"].get("detail-type", [])) <= event_types(), rid
        for target in props["Targets"]:
            assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 86400
    # The safety alerts: the two types an operator must hear of, to the
    # topic, read as a short text without any content (there is none).
    safety = found["SafetyAlertsRule"]
    assert safety["Condition"] == "CreateSafetyAlerts"
    assert set(safety["Properties"]["EventPattern"]["detail-type"]) == {"safety.critical", "message.blocked"}
    assert set(safety["Properties"]["EventPattern"]) == {"source", "detail-type"}
    [target] = safety["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": "SafetyAlertsTopic"}
    paths = target["InputTransformer"]["InputPathsMap"]
    assert all(v == "$.detail-type" or v.startswith("$.detail.") for v in paths.values())
    assert not any("content" in v.lower() or "text" in v.lower() for v in paths.values())
    template_text = target["InputTransformer"]["InputTemplate"]
    assert json.loads(re.sub(r"<[a-z]+>", "0", template_text))["alert"]
    assert set(re.findall(r"<([a-z]+)>", template_text)) == set(paths)
    # Values that may hold any character (ids chosen by clients) go in as
    # JSON values, never inside a quoted string, where they are not escaped.
    for quoted in re.findall(r'"([^"]*)"', template_text):
        for name in re.findall(r"<([a-z]+)>", quoted):
            assert paths[name] in {"$.detail-type", "$.detail.data.conversationId", "$.detail.data.messageId",
                                   "$.detail.data.action", "$.detail.data.severity"}, name
    # The integration queue: every event, as the plain CloudEvent.
    integration = found["IntegrationEventsRule"]
    assert integration["Condition"] == "CreateIntegrationQueue"
    assert integration["Properties"]["EventPattern"] == {"source": [source]}
    [target] = integration["Properties"]["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["IntegrationEventsQueue", "Arn"]}
    assert target["InputPath"] == "$.detail"


def test_the_optional_parts_are_off_by_default(template):
    params = template["Parameters"]
    assert params["SafetyAlertEmail"]["Default"] == ""
    assert params["EventsToQueue"]["Default"] == "false"
    conditions = template["Conditions"]
    assert conditions["CreateSafetyAlerts"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SafetyAlertEmail"}, ""]}]}
    assert conditions["CreateIntegrationQueue"] == {"Fn::Equals": [{"Ref": "EventsToQueue"}, "true"]}
    resources = template["Resources"]
    for rid in ("SafetyAlertsTopic", "SafetyAlertsTopicPolicy", "SafetyAlertsDeadLetterQueue",
                "SafetyAlertsDeadLetterQueuePolicy", "SafetyAlertsRule"):
        assert resources[rid]["Condition"] == "CreateSafetyAlerts", rid
    for rid in ("IntegrationEventsQueue", "IntegrationEventsDeadLetterQueue", "IntegrationEventsQueuePolicy",
                "IntegrationEventsRule"):
        assert resources[rid]["Condition"] == "CreateIntegrationQueue", rid
    outputs = template["Outputs"]
    assert outputs["IntegrationEventsQueueUrl"] == {**outputs["IntegrationEventsQueueUrl"],
                                                    "Condition": "CreateIntegrationQueue",
                                                    "Value": {"Ref": "IntegrationEventsQueue"}}
    assert outputs["SafetyAlertsTopicArn"]["Condition"] == "CreateSafetyAlerts"
    topic = resources["SafetyAlertsTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "Key"}
    assert topic["Subscription"] == [{"Protocol": "email", "Endpoint": {"Ref": "SafetyAlertEmail"}}]
    for rid in ("SafetyAlertsDeadLetterQueue", "IntegrationEventsQueue", "IntegrationEventsDeadLetterQueue"):
        assert resources[rid]["Properties"]["KmsMasterKeyId"] == {"Ref": "Key"}, rid


def test_only_its_rule_may_send_to_a_target(template):
    """Each topic or queue policy lets EventBridge send for its rule only
    (aws:SourceArn), and the rule's targets are exactly what the policies
    cover."""
    resources = template["Resources"]
    covered: dict[str, str] = {}
    for rid, r in resources.items():
        if r["Type"] not in {"AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy"}:
            continue
        props = r["Properties"]
        targets = props["Topics"] if r["Type"] == "AWS::SNS::TopicPolicy" else props["Queues"]
        action = "sns:Publish" if r["Type"] == "AWS::SNS::TopicPolicy" else "sqs:SendMessage"
        for st in props["PolicyDocument"]["Statement"]:
            assert st["Effect"] == "Allow"
            assert st["Principal"] == {"Service": "events.amazonaws.com"}, rid
            assert as_list(st["Action"]) == [action], rid
            [rule_ref] = as_list(st["Condition"]["ArnEquals"]["aws:SourceArn"])
            assert set(st["Condition"]) == {"ArnEquals"}
            rule = rule_ref["Fn::GetAtt"][0]
            assert rule_ref == {"Fn::GetAtt": [rule, "Arn"]} and resources[rule]["Type"] == "AWS::Events::Rule"
            assert resources[rule]["Condition"] == r["Condition"]
            arns = {json.dumps(x, sort_keys=True) for x in as_list(st["Resource"])}
            for target in targets:
                target_id = target["Ref"]
                arn = {"Ref": target_id} if action == "sns:Publish" else {"Fn::GetAtt": [target_id, "Arn"]}
                assert json.dumps(arn, sort_keys=True) in arns, (rid, target_id)
                covered[target_id] = rule
    expected = {}
    for rid, rule in rules(template).items():
        for target in rule["Properties"]["Targets"]:
            for arn in (target["Arn"], target["DeadLetterConfig"]["Arn"]):
                expected[arn["Ref"] if "Ref" in arn else arn["Fn::GetAtt"][0]] = rid
    assert covered == expected


def test_eventbridge_may_use_the_key_for_its_targets_only(template):
    """The key lets events.amazonaws.com encrypt for a rule's own targets
    only: aws:SourceArn is the rule (by its name) and the encryption context
    is the topic's or queue's ARN (by its name); each statement exists only
    with its rule."""
    resources = template["Resources"]
    statements_ = resources["Key"]["Properties"]["KeyPolicy"]["Statement"]
    granted: dict[str, set[str]] = {}
    for entry in statements_:
        st = entry
        if "Fn::If" in entry:
            condition, st, otherwise = entry["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
        elif entry.get("Principal") != {"Service": "events.amazonaws.com"}:
            continue
        else:
            pytest.fail(f"unconditional statement for EventBridge: {entry}")
        assert st["Principal"] == {"Service": "events.amazonaws.com"}
        assert set(as_list(st["Action"])) <= {"kms:Decrypt", "kms:GenerateDataKey"}
        cond = st["Condition"]
        assert set(cond) == {"ArnEquals", "StringEquals"}
        [source] = [arn_of(a) for a in as_list(cond["ArnEquals"]["aws:SourceArn"])]
        [(context_key, values)] = cond["StringEquals"].items()
        assert context_key in {"kms:EncryptionContext:aws:sns:topicArn", "kms:EncryptionContext:aws:sqs:arn"}
        rule_id = next(rid for rid, r in rules(template).items() if rule_arn(r) == source)
        assert resources[rule_id]["Condition"] == condition
        for value in as_list(values):
            granted.setdefault(rule_id, set()).add(arn_of(value))
    expected: dict[str, set[str]] = {}
    for rid, rule in rules(template).items():
        for target in rule["Properties"]["Targets"]:
            for arn in (target["Arn"], target["DeadLetterConfig"]["Arn"]):
                target_id = arn["Ref"] if "Ref" in arn else arn["Fn::GetAtt"][0]
                props = resources[target_id]["Properties"]
                if resources[target_id]["Type"] == "AWS::SNS::Topic":
                    name = subst(props["TopicName"], "S")
                    expected.setdefault(rid, set()).add(f"arn:aws:sns:r:1:{name}")
                else:
                    name = subst(props["QueueName"], "S")
                    expected.setdefault(rid, set()).add(f"arn:aws:sqs:r:1:{name}")
                assert props["KmsMasterKeyId"] == {"Ref": "Key"}
    assert granted == expected


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


def test_deployed_resources_equal_what_init_aws_creates(aws, manifest):
    """The template's table and queues, created by CloudFormation, against
    those `convo-local init-aws` creates from resources.rs, compared through
    the DynamoDB and SQS APIs. (moto's CloudFormation does not apply TTL,
    PITR or SSE settings; the static tests above check those.) init-aws
    gives every queue its --visibility-timeout (default 180 s, the writes'
    and titles' one): the events queue's 60 s is compared with the
    manifest instead."""
    dynamo, sqs = aws
    suffix = uuid.uuid4().hex[:8]
    deployed, created = f"cfn-{suffix}", f"init-{suffix}"
    stack.deploy(deployed)
    run = subprocess.run([BIN, "init-aws", "--prefix", created], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("CONVO_")})
    assert run.returncode == 0, run.stderr
    assert _table_shape(dynamo, deployed) == _table_shape(dynamo, created)
    for queue in ("writes.fifo", "writes-dlq.fifo", "titles", "titles-dlq", "events", "events-dlq"):
        a = _queue_shape(sqs, f"{deployed}-{queue}")
        b = _queue_shape(sqs, f"{created}-{queue}")
        if "deadLetterTarget" in a:
            a["deadLetterTarget"] = a["deadLetterTarget"].replace(deployed, "P")
            b["deadLetterTarget"] = b["deadLetterTarget"].replace(created, "P")
        if queue == "events":
            assert a.pop("VisibilityTimeout") == str(manifest["queues"]["events"]["VisibilityTimeout"])
            b.pop("VisibilityTimeout")
        assert a == b, queue



def test_deployed_key_table_matches_the_manifest(aws, manifest):
    """The key table as CloudFormation creates it (moto), against the
    code's definition, and the environment stack.py gives the functions."""
    dynamo, _ = aws
    name = f"cfn-{uuid.uuid4().hex[:8]}"
    env = stack.environment(stack.deploy(name))
    expected = manifest["keyTable"]
    table_name = expected["name"].replace("{prefix}", name)
    assert env["CONVO_KEYS_TABLE"] == table_name
    t = dynamo.describe_table(TableName=table_name)["Table"]
    props = expected["properties"]
    assert t["KeySchema"] == props["KeySchema"]
    assert sorted((a["AttributeName"], a["AttributeType"]) for a in t["AttributeDefinitions"]) == \
        sorted((a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"])
    assert t["BillingModeSummary"]["BillingMode"] == props["BillingMode"]
    assert t["DeletionProtectionEnabled"] is props["DeletionProtectionEnabled"] is True
    assert not t.get("GlobalSecondaryIndexes")
    backups = dynamo.describe_continuous_backups(TableName=table_name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "DISABLED"
    # The key the data keys are made under: the stack's own (found by its
    # alias; moto's DescribeKey fails on a key CloudFormation made).
    aliases = boto3.client("kms").list_aliases()["Aliases"]
    [target] = [a["TargetKeyId"] for a in aliases if a["AliasName"] == f"alias/{name}"]
    assert env["CONVO_KMS_KEY_ID"].startswith("arn:aws:kms:")
    assert env["CONVO_KMS_KEY_ID"].endswith(f":key/{target}")


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
