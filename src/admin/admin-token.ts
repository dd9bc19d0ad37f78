/**
 * The embedded mode's admin token: generated once into DATA_DIR/admin-token (mode 0600) so a
 * fresh `npm start` is administrable by the CLI on the same machine without configuration.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export const ADMIN_TOKEN_FILE = "admin-token";

export function adminTokenPath(dataDir: string): string {
  return join(dataDir, ADMIN_TOKEN_FILE);
}

/** Reads the token file, creating it with a new random token (mode 0600) when absent. */
export async function ensureAdminTokenFile(dataDir: string): Promise<string> {
  const existing = await readAdminTokenFile(dataDir);
  if (existing !== undefined) return existing;
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const token = `lkadm_${randomBytes(32).toString("base64url")}`;
  try {
    // "wx": never overwrite a token another process wrote in the meantime.
    await writeFile(adminTokenPath(dataDir), `${token}\n`, { mode: 0o600, flag: "wx" });
    return token;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const raced = await readAdminTokenFile(dataDir);
    if (raced === undefined) throw error;
    return raced;
  }
}

/** The token in DATA_DIR/admin-token, or undefined when there is no such file. */
export async function readAdminTokenFile(dataDir: string): Promise<string | undefined> {
  try {
    const token = (await readFile(adminTokenPath(dataDir), "utf8")).trim();
    return token === "" ? undefined : token;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}
