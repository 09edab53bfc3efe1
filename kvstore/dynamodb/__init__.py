"""The DynamoDB backend: Vault's table format on aiobotocore.

Modules: ``config`` (settings from Vault's keys and the environment), ``errormap`` (SDK errors to
kvstore errors), ``records`` (items <-> entries), ``table`` (the one request choke point),
``writer`` (the one BatchWriteItem sender), ``lock`` (lock records), ``backend`` (the store).
"""

from kvstore.dynamodb.backend import DynamoDBBackend
from kvstore.dynamodb.config import DynamoDBConfig

__all__ = ["DynamoDBBackend", "DynamoDBConfig"]
