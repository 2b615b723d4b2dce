"""Python client for Tally.

The messages and gRPC stubs are generated from Tally's proto files into the
``tally.v1`` package (``account_service_pb2``, ``metering_service_pb2``, ...).
This module adds what every caller needs around them: a channel with the
service stubs, an API key on every call, the ``ErrorInfo`` of a
refusal, and idempotency keys.
"""

from __future__ import annotations

import collections
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tally.v1 import (
    account_service_pb2_grpc,
    catalog_service_pb2_grpc,
    metering_service_pb2_grpc,
    test_clock_service_pb2_grpc,
)

__all__ = ["Tally", "connect", "error_info", "new_idempotency_key"]

DEFAULT_ADDRESS = "127.0.0.1:50051"


@dataclass(frozen=True)
class Tally:
    """The services of one tallyd, over one channel."""

    channel: grpc.Channel
    accounts: account_service_pb2_grpc.AccountServiceStub
    metering: metering_service_pb2_grpc.MeteringServiceStub
    catalog: catalog_service_pb2_grpc.CatalogServiceStub
    test_clocks: test_clock_service_pb2_grpc.TestClockServiceStub

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Tally":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def connect(
    address: str = DEFAULT_ADDRESS,
    *,
    api_key: Optional[str] = None,
    credentials: Optional[grpc.ChannelCredentials] = None,
    options: Sequence[Tuple[str, Any]] = (),
) -> Tally:
    """Opens a channel to tallyd at ``address`` (any gRPC target:
    ``host:port``, ``dns:///tally-headless:50051``, ...).

    Plaintext unless ``credentials`` are given (e.g.
    ``grpc.ssl_channel_credentials()`` for a tallyd with ``--tls-cert``).
    ``api_key`` is sent as ``authorization: Bearer <key>`` on every call, for
    a tallyd with ``--api-keys``. ``options`` are gRPC channel arguments,
    e.g. ``[("grpc.lb_policy_name", "round_robin")]``. The channel connects
    on the first call and again after it breaks.
    """
    if credentials is None:
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials, options=options)
    if api_key is not None:
        channel = grpc.intercept_channel(channel, _BearerKey(api_key))
    return Tally(
        channel=channel,
        accounts=account_service_pb2_grpc.AccountServiceStub(channel),
        metering=metering_service_pb2_grpc.MeteringServiceStub(channel),
        catalog=catalog_service_pb2_grpc.CatalogServiceStub(channel),
        test_clocks=test_clock_service_pb2_grpc.TestClockServiceStub(channel),
    )


def error_info(error: grpc.RpcError) -> Optional[error_details_pb2.ErrorInfo]:
    """The ``google.rpc.ErrorInfo`` of a failed call, or None.

    Every error tallyd returns carries one (domain ``tally``); its
    ``reason`` (``INSUFFICIENT_CREDITS``, ``UNKNOWN_ACCOUNT``, ...) is the
    machine-readable cause and ``metadata`` its figures. An error without
    one did not come from tallyd (e.g. UNAVAILABLE from a broken
    connection).
    """
    if not isinstance(error, grpc.Call):
        return None
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def new_idempotency_key() -> str:
    """A fresh random key for one mutation.

    Keep the key of a call and send it again when retrying that call: Tally
    answers a retry with the first answer and charges once. A new key is a
    new charge.
    """
    return str(uuid.uuid4())


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <key>`` to every call."""

    def __init__(self, key: str) -> None:
        self._header = ("authorization", f"Bearer {key}")

    def _with_key(self, details: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._header],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)
