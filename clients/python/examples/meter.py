"""Meters one AI action against a running tallyd, and checks the figures.

    python examples/meter.py [HOST:PORT]

The address comes from the argument, else TALLY_ADDRESS, else
127.0.0.1:50051 (plaintext). TALLY_API_KEY, when set, is sent on every call
(a key with the meter, read and admin scopes). Exits 1 if Tally answers
anything but the expected figures.
"""

import os
import sys
import uuid

import grpc
from google.protobuf.duration_pb2 import Duration

import tally_client
from tally.v1 import account_service_pb2 as account
from tally.v1 import credits_pb2 as credits
from tally.v1 import metering_service_pb2 as metering
from tally.v1 import reads_pb2 as reads


def expect(what: str, actual: object, expected: object) -> None:
    if actual != expected:
        sys.exit(f"FAIL {what}: expected {expected!r}, got {actual!r}")
    print(f"ok   {what} = {actual!r}")


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TALLY_ADDRESS", "127.0.0.1:50051")
    api_key = os.environ.get("TALLY_API_KEY")

    # One account per run, and idempotency keys derived from it: a retry of
    # a step sends the same key again and gets the first answer back.
    run = uuid.uuid4().hex[:12]
    account_id = f"example-py-{run}"

    def key(step: str) -> str:
        return f"{account_id}/{step}"

    with tally_client.connect(address, api_key=api_key) as tally:
        tally.accounts.OpenAccount(
            account.OpenAccountRequest(idempotency_key=key("open"), account_id=account_id),
            timeout=5,
        )
        tally.accounts.Grant(
            account.GrantRequest(
                idempotency_key=key("grant"),
                account_id=account_id,
                kind=credits.BUCKET_KIND_MONTHLY,
                amount_millicredits=10_000,  # 10 credits
            ),
            timeout=5,
        )

        # Hold an estimate of 8 credits before the work starts...
        reserved = tally.metering.Reserve(
            metering.ReserveRequest(
                idempotency_key=key("task-1/reserve"),
                account_id=account_id,
                member_id="alice",
                action="article.draft",
                amount_millicredits=8_000,
                ttl=Duration(seconds=600),
            ),
            timeout=5,
        )
        expect("available after the hold", reserved.available_millicredits, 2_000)

        # ...and settle what it actually cost when it ends.
        commit = metering.CommitRequest(
            idempotency_key=key("task-1/commit"),
            account_id=account_id,
            reservation_id=reserved.reservation.reservation_id,
            amount_millicredits=6_500,
        )
        committed = tally.metering.Commit(commit, timeout=5)
        expect("charged", committed.receipt.charged_millicredits, 6_500)
        expect("overage", committed.receipt.overage_millicredits, 0)
        expect("available after the commit", committed.available_millicredits, 3_500)

        # A retry (say the answer was lost) sends the same key: the first
        # answer comes back and nothing is charged twice.
        retried = tally.metering.Commit(commit, timeout=5)
        expect("retried commit: charged", retried.receipt.charged_millicredits, 6_500)
        expect("retried commit: log position", retried.consistency_token, committed.consistency_token)

        # Reads follow the log a few milliseconds behind: pass the last
        # write's token to read it.
        balance = tally.accounts.GetBalance(
            account.GetBalanceRequest(
                account_id=account_id,
                consistency=reads.ReadConsistency(at_least_as_fresh=committed.consistency_token),
            ),
            timeout=5,
        ).balance
        expect("balance: available", balance.available_millicredits, 3_500)
        expect("balance: granted", balance.granted_millicredits, 10_000)
        expect("balance: consumed", balance.consumed_millicredits, 6_500)

        # A refusal is an error whose ErrorInfo says why, with the figures.
        try:
            tally.metering.Reserve(
                metering.ReserveRequest(
                    idempotency_key=key("task-2/reserve"),
                    account_id=account_id,
                    member_id="alice",
                    action="article.draft",
                    amount_millicredits=5_000,
                ),
                timeout=5,
            )
        except grpc.RpcError as error:
            info = tally_client.error_info(error)
            if info is None:
                raise  # not an answer from Tally: e.g. the connection broke
            expect("refusal: code", error.code().name, "FAILED_PRECONDITION")
            expect("refusal: reason", info.reason, "INSUFFICIENT_CREDITS")
            expect("refusal: available", info.metadata["available_millicredits"], "3500")
            expect("refusal: needed", info.metadata["needed_millicredits"], "5000")
        else:
            sys.exit("FAIL a hold of 5 credits out of 3.5 available was accepted")

    print(f"metered account {account_id} at {address}")


if __name__ == "__main__":
    main()
