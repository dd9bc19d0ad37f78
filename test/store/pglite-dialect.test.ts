import { setImmediate as nextTurn } from "node:timers/promises";
import { PGlite } from "@electric-sql/pglite";
import { CompiledQuery, Kysely, sql, type Generated } from "kysely";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { PGliteDialect } from "../../src/store/pglite-dialect.js";

interface TestDatabase {
  items: { id: Generated<number>; value: number };
}

let pglite: PGlite;
let db: Kysely<TestDatabase>;

beforeAll(async () => {
  pglite = await PGlite.create();
  db = new Kysely<TestDatabase>({ dialect: new PGliteDialect({ pglite }) });
  await sql`create table items (id int generated always as identity primary key, value int not null)`.execute(db);
});

afterAll(async () => {
  await db.destroy();
  await pglite.close();
});

beforeEach(async () => {
  await sql`truncate items`.execute(db);
});

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

async function countItems(): Promise<number> {
  const row = await db.selectFrom("items").select((eb) => eb.fn.countAll<string>().as("n")).executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * Lets every pending microtask run and makes one round trip to PGlite directly, so a query
 * that was not blocked by the dialect's lock would have reached PGlite (and been answered,
 * PGlite's own queue being FIFO) by the time this resolves.
 */
async function letEverythingElseRun(): Promise<void> {
  await nextTurn();
  await pglite.query("select 1");
}

describe("PGliteDialect", () => {
  it("a transaction on PGlite is never interleaved with a concurrent query", async () => {
    const inside = deferred();
    const finish = deferred();
    const order: string[] = [];

    const transaction = db
      .transaction()
      .execute(async (trx) => {
        await trx.insertInto("items").values({ value: 1 }).execute();
        inside.resolve();
        await finish.promise;
        order.push("transaction rolled back");
        throw new Error("roll back on purpose");
      })
      .catch((error: unknown) => (error instanceof Error ? error.message : "unexpected"));

    await inside.promise;
    // Inside the open transaction this count would see its uncommitted row (1).
    const concurrent = countItems().then((n) => {
      order.push("concurrent query");
      return n;
    });
    await letEverythingElseRun();
    expect(order).toEqual([]);

    finish.resolve();
    expect(await transaction).toBe("roll back on purpose");
    expect(await concurrent).toBe(0);
    expect(order).toEqual(["transaction rolled back", "concurrent query"]);
  });

  it("a committed transaction is seen whole by the query queued behind it", async () => {
    const inside = deferred();
    const finish = deferred();
    const transaction = db.transaction().execute(async (trx) => {
      await trx.insertInto("items").values({ value: 1 }).execute();
      inside.resolve();
      await finish.promise;
      await trx.insertInto("items").values({ value: 2 }).execute();
    });
    await inside.promise;
    const concurrent = countItems();
    finish.resolve();
    await transaction;
    expect(await concurrent).toBe(2);
  });

  it("queries run in the order they were issued (first come, first served)", async () => {
    await Promise.all(Array.from({ length: 20 }, (_, i) => db.insertInto("items").values({ value: i }).execute()));
    const rows = await db.selectFrom("items").select("value").orderBy("id").execute();
    expect(rows.map((r) => r.value)).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it("a failing query releases the connection for the next one", async () => {
    const failures = await Promise.allSettled(
      Array.from({ length: 5 }, () => sql`select * from no_such_table`.execute(db)),
    );
    expect(failures.map((f) => f.status)).toEqual(Array(5).fill("rejected"));
    const first = failures[0];
    expect(first?.status === "rejected" && (first.reason as { code?: string }).code).toBe("42P01");
    expect(await countItems()).toBe(0);
  });

  it("a failing transaction rolls back and releases the connection", async () => {
    const attempt = db.transaction().execute(async (trx) => {
      await trx.insertInto("items").values({ value: 7 }).execute();
      await sql`select 1 / 0`.execute(trx);
    });
    await expect(attempt).rejects.toMatchObject({ code: "22012" });
    expect(await countItems()).toBe(0);
  });

  it("a savepoint rolled back undoes only its own writes", async () => {
    const trx = await db.startTransaction().execute();
    await trx.insertInto("items").values({ value: 1 }).execute();
    const inner = await trx.savepoint("inner point").execute();
    await inner.insertInto("items").values({ value: 2 }).execute();
    await inner.rollbackToSavepoint("inner point").execute();
    await inner.commit().execute();
    const rows = await db.selectFrom("items").select("value").execute();
    expect(rows).toEqual([{ value: 1 }]);
  });

  it("numAffectedRows is a bigint for writes and absent for reads", async () => {
    const inserted = await db.insertInto("items").values([{ value: 1 }, { value: 2 }, { value: 3 }]).executeTakeFirst();
    expect(inserted.numInsertedOrUpdatedRows).toBe(3n);
    const updated = await db.updateTable("items").set({ value: 9 }).where("value", ">", 1).executeTakeFirst();
    expect(updated.numUpdatedRows).toBe(2n);
    const deleted = await db.deleteFrom("items").where("value", "=", 9).executeTakeFirst();
    expect(deleted.numDeletedRows).toBe(2n);
    const read = await sql`select 1 as one`.execute(db);
    expect(read.numAffectedRows).toBeUndefined();
    expect(read.rows).toEqual([{ one: 1 }]);
  });

  it("streaming yields every row, in chunks of the requested size", async () => {
    const compiled = sql<{ n: number }>`select n from generate_series(1, 10) as n`.compile(db);
    const chunks: number[] = [];
    const values: number[] = [];
    await db.getExecutor().provideConnection(async (c) => {
      for await (const chunk of c.streamQuery<{ n: number }>(compiled, 4)) {
        chunks.push(chunk.rows.length);
        values.push(...chunk.rows.map((r) => r.n));
      }
    });
    expect(chunks).toEqual([4, 4, 2]);
    expect(values).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it("a parameterless multi-statement script runs whole, as it does on pg", async () => {
    await sql`insert into items (value) values (1); insert into items (value) values (2)`.execute(db);
    expect(await countItems()).toBe(2);
  });

  it("a connection used after its release fails instead of joining the next holder's work", async () => {
    const driver = new PGliteDialect({ pglite }).createDriver();
    await driver.init();
    const connection = await driver.acquireConnection();
    await driver.releaseConnection(connection);
    await driver.releaseConnection(connection); // a double release must not free the lock twice
    await expect(connection.executeQuery(CompiledQuery.raw("select 1"))).rejects.toThrow(/after it was released/);
    const next = await driver.acquireConnection();
    const result = await next.executeQuery<{ one: number }>(CompiledQuery.raw("select 1 as one"));
    expect(result.rows).toEqual([{ one: 1 }]);
    await driver.releaseConnection(next);
    await driver.destroy();
  });

  it("destroy lets queued queries finish and refuses later ones", async () => {
    const driver = new PGliteDialect({ pglite }).createDriver();
    await driver.init();
    const holder = await driver.acquireConnection();
    const queued = driver.acquireConnection();
    const destroyed = driver.destroy();
    await driver.releaseConnection(holder);
    const queuedConnection = await queued;
    const result = await queuedConnection.executeQuery<{ one: number }>(CompiledQuery.raw("select 1 as one"));
    expect(result.rows).toEqual([{ one: 1 }]);
    await driver.releaseConnection(queuedConnection);
    await destroyed;
    await expect(driver.acquireConnection()).rejects.toThrow(/destroyed/);
  });
});
