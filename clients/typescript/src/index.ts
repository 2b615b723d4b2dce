/**
 * TypeScript client for Tally: the messages and service descriptors
 * generated from Tally's proto files (src/gen, by protoc-gen-es), Connect
 * clients for them over gRPC (HTTP/2, Node.js), and the ErrorInfo of a
 * refusal.
 */
export { connect, DEFAULT_ADDRESS, type ConnectOptions, type Tally } from "./client.js";
export { errorInfo, type ErrorInfo } from "./errors.js";
export * from "./gen/tally/v1/account_service_pb.js";
export * from "./gen/tally/v1/catalog_service_pb.js";
export * from "./gen/tally/v1/credits_pb.js";
export * from "./gen/tally/v1/metering_service_pb.js";
export * from "./gen/tally/v1/reads_pb.js";
export * from "./gen/tally/v1/test_clock_service_pb.js";
