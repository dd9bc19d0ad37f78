/** The package's public API: the typed client and the contract's generated types. */
export { createLicensingClient, type LicensingClient, type LicensingClientOptions } from "./client.js";
export * from "./gen/licensing/v1/licensing_pb.js";
