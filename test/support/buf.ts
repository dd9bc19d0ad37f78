/**
 * The buf CLI for tests, at the version package.json pins (config.buf). buf is run through npx
 * rather than installed as a devDependency: its npm package lists a binary package per platform
 * as optional dependencies, and a lockfile that cannot name them all makes `npm ci` refuse.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./service.js";

const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { config: { buf: string } };

/** [command, ...args] that run buf; append buf's own arguments. */
export const BUF_COMMAND: readonly string[] = ["npx", "--yes", pkg.config.buf];
