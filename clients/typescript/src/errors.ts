import { ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/**
 * The `google.rpc.ErrorInfo` Tally puts in every error: `reason` is the
 * machine-readable cause (`INSUFFICIENT_CREDITS`, `UNKNOWN_ACCOUNT`, ...),
 * `metadata` its figures (e.g. `available_millicredits`).
 */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

/**
 * The ErrorInfo of a failed call, or undefined when the error did not come
 * from tallyd (e.g. `Code.Unavailable` from a broken connection).
 *
 * Connect hands over the details it has no schema for as bytes; ErrorInfo's
 * three fields are read here rather than by generating googleapis' protos
 * into this package.
 */
export function errorInfo(error: unknown): ErrorInfo | undefined {
  for (const detail of ConnectError.from(error).details) {
    if ("type" in detail && detail.type === "google.rpc.ErrorInfo") {
      return decodeErrorInfo(detail.value);
    }
  }
  return undefined;
}

// google.rpc.ErrorInfo: reason = 1, domain = 2, map<string, string>
// metadata = 3 (map entries are messages of key = 1, value = 2).
function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) {
      info.reason = reader.string();
    } else if (field === 2 && wireType === WireType.LengthDelimited) {
      info.domain = reader.string();
    } else if (field === 3 && wireType === WireType.LengthDelimited) {
      const [key, value] = decodeEntry(reader.bytes());
      info.metadata[key] = value;
    } else {
      reader.skip(wireType, field);
    }
  }
  return info;
}

function decodeEntry(bytes: Uint8Array): [string, string] {
  const reader = new BinaryReader(bytes);
  let key = "";
  let value = "";
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.LengthDelimited) {
      key = reader.string();
    } else if (field === 2 && wireType === WireType.LengthDelimited) {
      value = reader.string();
    } else {
      reader.skip(wireType, field);
    }
  }
  return [key, value];
}
