"""How moto's own Query time grows with the partition (BENCHMARKS.md).

DynamoDB reads a query's items from a sorted partition: the last 20 of
10,000 cost what the last 20 of 10 cost. This script times moto alone, with
no convo code: a Query of the newest 20 items (Limit 20, newest first) of a
partition of 10 items while the table holds only those, then again after a
second partition of 10,000 items of 400 bytes was added, and on that large
partition.

    .venv-bench/bin/python bench/moto_scaling.py
"""
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        for _ in range(100):
            try:
                client.list_tables()
                break
            except Exception:
                time.sleep(0.1)
        client.create_table(
            TableName="scaling",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        def fill(part, n):
            for start in range(0, n, 25):
                puts = [
                    {"PutRequest": {"Item": {"pk": {"S": part}, "sk": {"S": f"M#{i:020}"}, "body": {"S": "x" * 400}}}}
                    for i in range(start, min(n, start + 25))
                ]
                client.batch_write_item(RequestItems={"scaling": puts})

        def time_query(part, label):
            times = []
            for _ in range(30):
                began = time.perf_counter()
                client.query(
                    TableName="scaling",
                    KeyConditionExpression="pk = :p",
                    ExpressionAttributeValues={":p": {"S": part}},
                    ScanIndexForward=False,
                    Limit=20,
                )
                times.append((time.perf_counter() - began) * 1000)
            print(f"moto Query of the newest 20, {label}: median {statistics.median(times):.1f} ms")

        fill("small", 10)
        time_query("small", "partition of 10 items, table of 10 items")
        fill("large", 10_000)
        time_query("small", "partition of 10 items, table of 10,010 items")
        time_query("large", "partition of 10,000 items, table of 10,010 items")
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
