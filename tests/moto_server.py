"""moto's server, with DynamoDB's transactions made atomic as they are in AWS,
and their rollback made proportional to the transaction, not to the table.

moto rolls a failed TransactWriteItems back by restoring a copy of each table
taken when the transaction began, without a lock: when transactions race
(ten concurrent creates of one active pair, in test_walkthrough.py), one
transaction's rollback can bring back another's partial write, or drop a
write made meanwhile. One lock around moto's DynamoDB writes gives them
DynamoDB's isolation.

That copy is also a deep copy of the whole table per item of the
transaction, so on moto a transaction's time grows with the table (a
conversation of 10,000 messages made every append cost seconds), which
DynamoDB's does not. Under the lock, only the items the transaction names
can change, so this server snapshots those items instead and restores them
on failure; moto's own per-table copy is skipped (on the transacting thread
only).

And moto checks the 400 KB item limit on an update by adding the new value
of an attribute to the item *with* the old value still in it, so an item
holding 210 KB cannot be rewritten with 200 KB: a conversation kept in one
item (the benchmarks' peer design) failed at half the size DynamoDB
allows. The check here leaves the value being replaced out. Same arguments
as `moto_server`.

And moto's SQS hands a FIFO group to one receiver at a time only when the
receives do not overlap: each receive checks which groups are in flight
when it starts, without a lock, so two receives at once (four pollers) can
both take messages of one group, which SQS never allows. One lock around
moto's SQS receives, deletes and visibility changes gives FIFO groups
their exclusivity.
"""
import copy
import threading

from moto.dynamodb import models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, ItemSizeTooLarge, LimitedSizeDict, bytesize
from moto.dynamodb.models.table import Table
from moto.server import main

_writes = threading.RLock()
_transacting = threading.local()


def _serialised(method):
    def locked(self, *args, **kwargs):
        with _writes:
            return method(self, *args, **kwargs)

    return locked


class _CopyUnlessTransacting:
    """Stands in for the `copy` module inside moto's DynamoDB backend: on the
    thread running a transaction, a table is not copied (its touched items
    are snapshotted instead); everything else is copied as before."""

    @staticmethod
    def deepcopy(obj, *args, **kwargs):
        if getattr(_transacting, "active", False) and isinstance(obj, Table):
            return obj
        return copy.deepcopy(obj, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(copy, name)


dynamodb_models.copy = _CopyUnlessTransacting()


def _touched_keys(backend, transact_items):
    keys = []
    for entry in transact_items:
        for op_type, op in entry.items():
            table_name = op.get("TableName")
            if table_name not in backend.tables:
                continue
            if op_type == "Put":
                table = backend.tables[table_name]
                attrs = op.get("Item", {})
                key = {table.hash_key_attr: attrs.get(table.hash_key_attr)}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs.get(table.range_key_attr)
                if any(v is None for v in key.values()):
                    continue  # moto rejects it before writing anything
            else:
                key = op.get("Key")
                if key is None:
                    continue
            keys.append((table_name, key))
    return keys


_original_transact = DynamoDBBackend.transact_write_items


def _transact_write_items(self, transact_items):
    with _writes:
        snapshots = []
        for table_name, key in _touched_keys(self, transact_items):
            try:
                item = self.get_item(table_name, key)
            except Exception:  # an invalid key: moto reports it below
                continue
            snapshots.append((table_name, key, copy.deepcopy(item.to_json()["Attributes"]) if item else None))
        _transacting.active = True
        try:
            return _original_transact(self, transact_items)
        except Exception:
            _transacting.active = False
            for table_name, key, attrs in reversed(snapshots):
                if attrs is None:
                    if self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attrs)
            raise
        finally:
            _transacting.active = False


DynamoDBBackend.transact_write_items = _transact_write_items


def _size(part):
    return part.size() if type(part) is DynamoType else bytesize(str(part))


def _set_attribute(self, key, value):
    # moto's limit (405,000 bytes of its own sizing), on the item as it
    # will be: without the attribute's old value.
    others = sum(_size(k) + _size(v) for k, v in self.items() if k != key)
    if others + _size(key) + _size(value) > 405000:
        raise ItemSizeTooLarge
    dict.__setitem__(self, key, value)


LimitedSizeDict.__setitem__ = _set_attribute
for _name in ("put_item", "update_item", "delete_item"):
    setattr(DynamoDBBackend, _name, _serialised(getattr(DynamoDBBackend, _name)))

from moto.sqs.models import SQSBackend  # noqa: E402

_sqs = threading.RLock()


def _sqs_serialised(method):
    def locked(self, *args, **kwargs):
        # A long poll waits outside the lock (it would hold every other
        # caller for its wait); convo's pollers make short ones.
        wait = kwargs.get("wait_seconds_timeout", args[2] if method.__name__ == "receive_message" and len(args) > 2 else 0)
        if wait:
            return method(self, *args, **kwargs)
        with _sqs:
            return method(self, *args, **kwargs)

    return locked


for _name in ("receive_message", "delete_message", "delete_message_batch", "change_message_visibility",
              "change_message_visibility_batch", "send_message", "send_message_batch"):
    setattr(SQSBackend, _name, _sqs_serialised(getattr(SQSBackend, _name)))

if __name__ == "__main__":
    main()
