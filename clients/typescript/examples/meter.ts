// Meters one AI action against a running tallyd, and checks the figures.
//
//     node dist/examples/meter.js [HOST:PORT]
//
// The address comes from the argument, else TALLY_ADDRESS, else
// 127.0.0.1:50051 (plaintext). TALLY_API_KEY, when set, is sent on every
// call (a key with the meter, read and admin scopes). Exits 1 if Tally
// answers anything but the expected figures.

import { randomUUID } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { BucketKind, connect, errorInfo, DEFAULT_ADDRESS } from "tally-client";

function expect(what: string, actual: unknown, expected: unknown): void {
  if (!isDeepStrictEqual(actual, expected)) {
    console.error(`FAIL ${what}: expected ${String(expected)}, got ${String(actual)}`);
    process.exit(1);
  }
  console.log(`ok   ${what} = ${String(actual)}`);
}

const address = process.argv[2] ?? process.env.TALLY_ADDRESS ?? DEFAULT_ADDRESS;
const tally = connect(address, { apiKey: process.env.TALLY_API_KEY });
const timeoutMs = 5_000;

// One account per run, and idempotency keys derived from it: a retry of a
// step sends the same key again and gets the first answer back.
const accountId = `example-ts-${randomUUID().replaceAll("-", "").slice(0, 12)}`;
const key = (step: string) => `${accountId}/${step}`;

await tally.accounts.openAccount({ idempotencyKey: key("open"), accountId }, { timeoutMs });
await tally.accounts.grant(
  {
    idempotencyKey: key("grant"),
    accountId,
    kind: BucketKind.MONTHLY,
    amountMillicredits: 10_000n, // 10 credits; int64 fields are bigints
  },
  { timeoutMs },
);

// Hold an estimate of 8 credits before the work starts...
const reserved = await tally.metering.reserve(
  {
    idempotencyKey: key("task-1/reserve"),
    accountId,
    memberId: "alice",
    action: "article.draft",
    amountMillicredits: 8_000n,
    ttl: durationFromMs(600_000),
  },
  { timeoutMs },
);
expect("available after the hold", reserved.availableMillicredits, 2_000n);

// ...and settle what it actually cost when it ends.
const commit = {
  idempotencyKey: key("task-1/commit"),
  accountId,
  reservationId: reserved.reservation?.reservationId ?? "",
  amountMillicredits: 6_500n,
};
const committed = await tally.metering.commit(commit, { timeoutMs });
expect("charged", committed.receipt?.chargedMillicredits, 6_500n);
expect("overage", committed.receipt?.overageMillicredits, 0n);
expect("available after the commit", committed.availableMillicredits, 3_500n);

// A retry (say the answer was lost) sends the same key: the first answer
// comes back and nothing is charged twice.
const retried = await tally.metering.commit(commit, { timeoutMs });
expect("retried commit: charged", retried.receipt?.chargedMillicredits, 6_500n);
expect("retried commit: log position", retried.consistencyToken, committed.consistencyToken);

// Reads follow the log a few milliseconds behind: pass the last write's
// token to read it.
const { balance } = await tally.accounts.getBalance(
  {
    accountId,
    consistency: {
      requirement: { case: "atLeastAsFresh", value: committed.consistencyToken },
    },
  },
  { timeoutMs },
);
expect("balance: available", balance?.availableMillicredits, 3_500n);
expect("balance: granted", balance?.grantedMillicredits, 10_000n);
expect("balance: consumed", balance?.consumedMillicredits, 6_500n);

// A refusal is an error whose ErrorInfo says why, with the figures.
try {
  await tally.metering.reserve(
    {
      idempotencyKey: key("task-2/reserve"),
      accountId,
      memberId: "alice",
      action: "article.draft",
      amountMillicredits: 5_000n,
    },
    { timeoutMs },
  );
  expect("a hold of 5 credits out of 3.5 available", "accepted", "refused");
} catch (error) {
  const info = errorInfo(error);
  if (info === undefined) {
    throw error; // not an answer from Tally: e.g. the connection broke
  }
  expect("refusal: code", Code[ConnectError.from(error).code], "FailedPrecondition");
  expect("refusal: reason", info.reason, "INSUFFICIENT_CREDITS");
  expect("refusal: available", info.metadata["available_millicredits"], "3500");
  expect("refusal: needed", info.metadata["needed_millicredits"], "5000");
}

console.log(`metered account ${accountId} at ${address}`);
