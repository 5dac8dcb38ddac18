"""The peer as a Lambda function, for the cold-start measurement.

Everything at module level is the function's init, as in a real Python
handler module: import boto3 and LangChain's DynamoDBChatMessageHistory and
build the history object. Then it is its own runtime: it speaks the Lambda
Runtime API (2018-06-01) with urllib only, so an emulator can time from the
process's start to its first `GET .../invocation/next`.

Environment:
  AWS_LAMBDA_RUNTIME_API  host:port of the Runtime API (set by Lambda)
  PEER_TABLE              the DynamoDB table
  PEER_SESSION            the conversation's session id
  AWS_ENDPOINT_URL        DynamoDB endpoint (moto), optional
  plus the usual AWS_REGION / AWS_DEFAULT_REGION and credentials variables.

Each invocation returns {"messages": <stored message count>}.
"""
import json
import os
import sys
import traceback
import urllib.request

RUNTIME = f"http://{os.environ['AWS_LAMBDA_RUNTIME_API']}/2018-06-01/runtime"


def _post(path, body, headers=None):
    request = urllib.request.Request(
        f"{RUNTIME}/{path}",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request) as response:
        response.read()


def _error_body(exc):
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_exception(exc),
    }


# ---- init ----
try:
    import boto3  # noqa: F401  (imported as a handler module would)
    from langchain_community.chat_message_histories import DynamoDBChatMessageHistory

    # Lambda sets AWS_REGION and AWS_DEFAULT_REGION; an emulator may set only
    # the first, which botocore does not read.
    if "AWS_REGION" in os.environ:
        os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])

    HISTORY = DynamoDBChatMessageHistory(
        table_name=os.environ["PEER_TABLE"],
        session_id=os.environ["PEER_SESSION"],
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
    )
except Exception as e:  # reported as Lambda's runtimes do, then exit
    _post("init/error", _error_body(e), {"Lambda-Runtime-Function-Error-Type": "Runtime.InitError"})
    sys.exit(1)


def handler(event):
    return {"messages": len(HISTORY.messages)}


def main():
    while True:
        with urllib.request.urlopen(f"{RUNTIME}/invocation/next") as response:
            request_id = response.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.loads(response.read() or b"null")
        try:
            result = handler(event)
        except Exception as e:
            _post(
                f"invocation/{request_id}/error",
                _error_body(e),
                {"Lambda-Runtime-Function-Error-Type": "Unhandled"},
            )
            continue
        _post(f"invocation/{request_id}/response", result)


if __name__ == "__main__":
    main()
