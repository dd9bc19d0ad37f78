/**
 * `licensing licenses list|get|suspend|reinstate|renew`, through AdminService.
 * Exit codes: 0 success, 2 bad usage (reported here); RPC errors are thrown for main.ts (exit 1).
 */
import type { License } from "../../gen/licensing/admin/v1/admin_pb.js";
import type { AdminClient } from "../admin-client.js";
import { table } from "../output.js";
import { entitlementJson, entitlementsTable } from "./admin-accounts.js";
import { isoOf, jsonOut, onePositional, OUTPUT, outputFormat, parse, parseTime, processIo, UsageError, withUsage, type CommandIo } from "./admin-common.js";

export const LICENSES_HELP = `Usage: licensing licenses list [--account ACCOUNT] [--output table|json]
       licensing licenses get LICENSE [--output table|json]
       licensing licenses suspend LICENSE
       licensing licenses reinstate LICENSE
       licensing licenses renew LICENSE --until TIME

Licences. Changes take effect on every replica's next Check (the licence's version grows).
  list        licences by id, optionally of one account
  get         one licence with its effective entitlements (the plan's, with licence overrides)
  suspend     Checks answer LICENSE_SUSPENDED until the licence is reinstated
  reinstate   make a suspended licence active again
  renew       set the end of validity: --until 2027-12-31, 2027-12-31T00:00:00Z, or 365d from now
  --account ID      (list) only this account's licences
  -o, --output FMT  table (default) or json

Note: the rules file stays the source of truth for what it declares. "licensing export" shows
these changes; applying a rules file that says otherwise (e.g. status active) reverts them.`;

export async function licensesCommand(args: string[], client: AdminClient, io: CommandIo = processIo): Promise<number> {
  return withUsage(io, "licenses", async () => {
    const [sub, ...rest] = args;
    switch (sub) {
      case "list": {
        const { values } = parse(rest, { ...OUTPUT, account: { type: "string" } });
        const output = outputFormat(values.output);
        const licenses: License[] = [];
        let pageToken = "";
        do {
          const page = await client.listLicenses({ accountId: values.account ?? "", pageSize: 1000, pageToken });
          licenses.push(...page.licenses);
          pageToken = page.nextPageToken;
        } while (pageToken !== "");
        const rows = licenses.map(licenseJson);
        io.stdout(
          output === "json"
            ? `${jsonOut(rows)}\n`
            : `${rows.length === 0 ? "no licences" : table([["ID", "ACCOUNT", "PLAN", "STATUS", "VALID UNTIL", "VERSION"], ...rows.map((l) => [l.id, l.account_id, l.plan, l.status, l.valid_until ?? "-", String(l.version)])])}\n`,
        );
        return 0;
      }
      case "get": {
        const { values, positionals } = parse(rest, OUTPUT, true);
        const output = outputFormat(values.output);
        const { license, entitlements } = await client.getLicense({ licenseId: onePositional(positionals, "licenses get needs exactly one LICENSE id") });
        const result = { ...licenseJson(license), entitlements: entitlements.map(entitlementJson) };
        io.stdout(output === "json" ? `${jsonOut(result)}\n` : `${licenseTable(license)}\n\n${entitlementsTable(entitlements)}\n`);
        return 0;
      }
      case "suspend":
      case "reinstate": {
        const { values, positionals } = parse(rest, OUTPUT, true);
        const output = outputFormat(values.output);
        const licenseId = onePositional(positionals, `licenses ${sub} needs exactly one LICENSE id`);
        const { license } = sub === "suspend" ? await client.suspendLicense({ licenseId }) : await client.reinstateLicense({ licenseId });
        io.stdout(output === "json" ? `${jsonOut(licenseJson(license))}\n` : `${licenseId}: ${license?.status ?? ""} (version ${license?.version ?? ""})\n`);
        return 0;
      }
      case "renew": {
        const { values, positionals } = parse(rest, { ...OUTPUT, until: { type: "string" } }, true);
        const output = outputFormat(values.output);
        const licenseId = onePositional(positionals, "licenses renew needs exactly one LICENSE id");
        if (values.until === undefined) throw new UsageError("licenses renew needs --until TIME (e.g. 2027-12-31 or 365d)");
        const { license } = await client.renewLicense({ licenseId, validUntil: parseTime("--until", values.until, io.now(), true) });
        io.stdout(output === "json" ? `${jsonOut(licenseJson(license))}\n` : `${licenseId}: valid until ${isoOf(license?.validUntil)} (version ${license?.version ?? ""})\n`);
        return 0;
      }
      default:
        throw new UsageError(sub === undefined ? "licenses needs a subcommand: list, get, suspend, reinstate or renew" : `unknown licenses subcommand "${sub}"`);
    }
  });
}

export function licenseJson(license: License | undefined) {
  return {
    id: license?.id ?? "",
    account_id: license?.accountId ?? "",
    plan: license?.plan ?? "",
    status: license?.status ?? "",
    valid_from: license?.validFrom === undefined ? null : isoOf(license.validFrom),
    valid_until: license?.validUntil === undefined ? null : isoOf(license.validUntil),
    environments: license?.environments ?? [],
    version: license?.version ?? 0n,
  };
}

export function licenseTable(license: License | undefined): string {
  const l = licenseJson(license);
  return table([
    ["licence", l.id],
    ["account", l.account_id],
    ["plan", l.plan],
    ["status", l.status],
    ["valid", `${l.valid_from ?? "always"} → ${l.valid_until ?? "forever"}`],
    ["environments", l.environments.join(", ") || "any"],
    ["version", String(l.version)],
  ]);
}
