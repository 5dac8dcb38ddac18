"""Deploys the data resources of infra/template.yaml (KMS key, the
conversation table and the key table, queues, the events queue among them)
through CloudFormation at AWS_ENDPOINT_URL (moto in tests/run),
with no SAM transform: the same resource definitions the real deployment
creates, minus the functions, API and alarms moto cannot run.

    python tests/infra/stack.py STACK_NAME   # prints the functions' env

The end-to-end suite in AWS mode runs convo-local against stacks made here.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import boto3
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"

# The resource types a resources-only deployment keeps.
DATA_TYPES = {"AWS::KMS::Key", "AWS::KMS::Alias", "AWS::DynamoDB::Table", "AWS::SQS::Queue"}

# The functions' environment, from the template's outputs.
ENV_FROM_OUTPUTS = {
    "CONVO_TABLE": "TableName",
    "CONVO_KEYS_TABLE": "KeysTableName",
    "CONVO_KMS_KEY_ID": "KeyArn",
    "CONVO_WRITES_QUEUE_URL": "WritesQueueUrl",
    "CONVO_WRITES_DLQ_URL": "WritesDeadLetterQueueUrl",
    "CONVO_TITLES_QUEUE_URL": "TitlesQueueUrl",
    "CONVO_TITLES_DLQ_URL": "TitlesDeadLetterQueueUrl",
    "CONVO_EVENTS_QUEUE_URL": "EventsQueueUrl",
    "CONVO_EVENTS_DLQ_URL": "EventsDeadLetterQueueUrl",
}


def load_template(path: Path = TEMPLATE) -> dict:
    """The template as plain data, intrinsic functions in their long form
    (``{"Ref": ...}``, ``{"Fn::Sub": ...}``), parsed by cfn-lint's decoder."""
    template, matches = decode(str(path))
    if matches:
        raise ValueError(f"{path} does not parse: {matches}")
    return _plain(template)


def _plain(node):
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def references(node) -> set[str]:
    """Logical ids a node refers to (Ref, Fn::GetAtt, ${...} in Fn::Sub)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref":
                found.add(value)
            elif key == "Fn::GetAtt":
                found.add(value[0] if isinstance(value, list) else value.split(".")[0])
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                for part in text.split("${")[1:]:
                    found.add(part.split("}")[0].split(".")[0])
                if isinstance(value, list):
                    found |= references(value[1])
            else:
                found |= references(value)
    elif isinstance(node, list):
        for value in node:
            found |= references(value)
    return {r for r in found if not r.startswith("AWS::")}


def conditions_used(node, conditions: dict) -> dict:
    """The conditions a node's Fn::If name, and those they name in turn."""
    found: set[str] = set()

    def walk(n):
        if isinstance(n, dict):
            for key, value in n.items():
                if key == "Fn::If":
                    found.add(value[0])
                    walk(value[1:])
                elif key == "Condition" and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(n, list):
            for value in n:
                walk(value)

    walk(node)
    done: set[str] = set()
    while found - done:
        name = sorted(found - done)[0]
        done.add(name)
        walk(conditions[name])
    return {name: conditions[name] for name in sorted(done)}


@functools.cache
def data_template_body() -> str:
    """The data resources of the template as a plain CloudFormation
    template (JSON), with the parameters and outputs that refer only to
    them. Built once per process: every stack of a test run uses it."""
    template = load_template()
    # The optional ones (the integration queue and its dead-letter queue,
    # the safety alerts' dead-letter queue) are off with the parameters'
    # defaults, as in a default deployment.
    resources = {k: v for k, v in template["Resources"].items()
                 if v["Type"] in DATA_TYPES and "Condition" not in v}
    keep = set(resources)
    params = template.get("Parameters", {})
    # The statements the key policy holds for the optional resources are
    # Fn::If of their conditions: those go along, with their parameters.
    conditions = conditions_used(resources, template.get("Conditions", {}))
    used = set().union(*(references(r) for r in resources.values()), references(conditions))
    missing = used - keep - set(params)
    if missing:
        raise ValueError(f"data resources refer to resources left out: {sorted(missing)}")
    # moto's CloudFormation passes a parameter's string ("true") through to
    # DeletionProtectionEnabled, and then answers DescribeTable with a
    # string where the SDKs expect a boolean; AWS converts it. Resolve it
    # here to the parameter's default, as a boolean. (The key table's is a
    # literal true, which moto takes as it is.)
    for table in (r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"):
        table_props = table["Properties"]
        protection = table_props.get("DeletionProtectionEnabled")
        if isinstance(protection, dict) and "Ref" in protection:
            table_props["DeletionProtectionEnabled"] = params[protection["Ref"]]["Default"] == "true"
    # The parameters still referred to once those are resolved.
    used = set().union(*(references(r) for r in resources.values()), references(conditions))
    outputs = {k: v for k, v in template.get("Outputs", {}).items()
               if "Condition" not in v and references(v["Value"]) <= keep}
    return json.dumps({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "convo data resources (from infra/template.yaml)",
        "Parameters": {k: v for k, v in params.items() if k in used},
        "Conditions": conditions,
        "Resources": resources,
        "Outputs": outputs,
    })


def client():
    return boto3.client("cloudformation", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))


def deploy(stack_name: str, timeout: float = 60.0) -> dict[str, str]:
    """Creates the stack unless it exists; returns its outputs."""
    cfn = client()
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except cfn.exceptions.ClientError:
        stacks = []
    if not stacks:
        cfn.create_stack(StackName=stack_name, TemplateBody=data_template_body())
    deadline = time.monotonic() + timeout
    while True:
        stack = cfn.describe_stacks(StackName=stack_name)["Stacks"][0]
        status = stack["StackStatus"]
        if status == "CREATE_COMPLETE":
            return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if status.endswith("FAILED") or "ROLLBACK" in status or time.monotonic() > deadline:
            events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
            reasons = [f'{e["LogicalResourceId"]}: {e.get("ResourceStatusReason")}' for e in events
                       if "FAILED" in e["ResourceStatus"]]
            raise RuntimeError(f"stack {stack_name} is {status}: {reasons}")
        time.sleep(0.2)


def environment(outputs: dict[str, str]) -> dict[str, str]:
    """The variables the functions read, as the template sets them."""
    return {env: outputs[key] for env, key in ENV_FROM_OUTPUTS.items()}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: stack.py STACK_NAME")
    for name, value in environment(deploy(sys.argv[1])).items():
        print(f"{name}={value}")
