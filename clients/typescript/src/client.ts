import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, type GrpcTransportOptions } from "@connectrpc/connect-node";
import { AccountService } from "./gen/tally/v1/account_service_pb.js";
import { CatalogService } from "./gen/tally/v1/catalog_service_pb.js";
import { MeteringService } from "./gen/tally/v1/metering_service_pb.js";
import { TestClockService } from "./gen/tally/v1/test_clock_service_pb.js";

/** The services of one tallyd, over one HTTP/2 connection. */
export interface Tally {
  accounts: Client<typeof AccountService>;
  metering: Client<typeof MeteringService>;
  catalog: Client<typeof CatalogService>;
  testClocks: Client<typeof TestClockService>;
}

export interface ConnectOptions {
  /**
   * Sent as `authorization: Bearer <key>` on every call, for a tallyd
   * started with `--api-keys`.
   */
  apiKey?: string;
  /** More interceptors (logging, tracing), run after the API key's. */
  interceptors?: Interceptor[];
  /**
   * Options of Node's HTTP/2 session, e.g. `{ ca }` for a tallyd whose
   * certificate comes from a private CA.
   */
  nodeOptions?: GrpcTransportOptions["nodeOptions"];
}

/** The address tallyd listens on by default. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";

/**
 * Clients for tallyd at `address`: `host:port` for plaintext, or a URL
 * (`https://tally.internal:50051` for a tallyd with `--tls-cert`). The
 * connection opens on the first call and again after it breaks.
 */
export function connect(address: string = DEFAULT_ADDRESS, options: ConnectOptions = {}): Tally {
  const baseUrl = address.includes("://") ? address : `http://${address}`;
  const interceptors: Interceptor[] = [];
  const { apiKey } = options;
  if (apiKey !== undefined) {
    interceptors.push((next) => (request) => {
      request.header.set("authorization", `Bearer ${apiKey}`);
      return next(request);
    });
  }
  interceptors.push(...(options.interceptors ?? []));
  const transport = createGrpcTransport({ baseUrl, interceptors, nodeOptions: options.nodeOptions });
  return {
    accounts: createClient(AccountService, transport),
    metering: createClient(MeteringService, transport),
    catalog: createClient(CatalogService, transport),
    testClocks: createClient(TestClockService, transport),
  };
}
