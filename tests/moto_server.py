"""moto's server, with DynamoDB's transactions made atomic as they are in AWS.

moto rolls a failed TransactWriteItems back by restoring a copy of each table
taken when the transaction began, without a lock: when transactions race
(ten concurrent creates of one active pair, in test_walkthrough.py), one
transaction's rollback can bring back another's partial write, or drop a
write made meanwhile. One lock around moto's DynamoDB writes gives them
DynamoDB's isolation. Same arguments as `moto_server`.
"""
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_writes = threading.RLock()


def _serialised(method):
    def locked(self, *args, **kwargs):
        with _writes:
            return method(self, *args, **kwargs)

    return locked


for _name in ("transact_write_items", "put_item", "update_item", "delete_item"):
    setattr(DynamoDBBackend, _name, _serialised(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    main()
