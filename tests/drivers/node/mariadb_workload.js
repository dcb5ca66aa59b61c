// Node mariadb (MariaDB Connector/Node.js): the driver workload.
// Usage: node mariadb_workload.js HOST PORT DATABASE BIG_BYTES
// (DRIVER_COMPRESS=1: over the compressed protocol)
// Text queries, server-side prepared statements (execute, sent with statement id -1
// behind their prepare) with every parameter type, long data, batch() (COM_STMT_BULK_EXECUTE),
// multi-statements, a CALL returning two result sets, errors, and one request larger
// than a 16 MiB protocol packet. Prints {"bulk": SQL, "affected": N} per batch.
'use strict';
const { Readable } = require('stream');
const mariadb = require('mariadb');

async function expectError(promise) {
  try {
    await promise;
  } catch (err) {
    return err.errno;
  }
  throw new Error('expected an error');
}

async function main() {
  const [host, port, database, big] = process.argv.slice(2);
  const conn = await mariadb.createConnection({
    host, port: Number(port), user: 'root', password: '', database, multipleStatements: true,
    bigIntAsNumber: false, maxAllowedPacket: 64 * 1024 * 1024,
    compress: process.env.DRIVER_COMPRESS === '1',
  });
  for (let i = 1; i <= 5; i++) {
    await conn.query(`SELECT name, price FROM items WHERE id = ${i}`);
  }
  await conn.query('UPDATE items SET qty = qty + 1 WHERE id < 5');

  for (let i = 0; i < 3; i++) {
    await conn.execute('SELECT id, name FROM items WHERE id BETWEEN ? AND ?', [i + 1, i + 10]);
  }
  await conn.execute(
    'INSERT INTO typed (ti, si, i, bi, ub, f, d, dec_v, s, bin, bl, tx, day, dt, tm, flag, nul)'
      + ' VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    [-5, 300, -70000, -(2 ** 40), 9223372036854775813n, 1.5, 2.25, '12345.678901', 'text é',
      Buffer.from([0, 1, 255]), Buffer.alloc(400, 98), 'long text '.repeat(50),
      '2024-02-29', new Date(Date.UTC(2024, 1, 29, 12, 30, 45, 123)), '05:06:07.000008', true, null],
  );
  await conn.execute('SELECT ti, ub, dec_v, day, dt, tm FROM typed WHERE id > ?', [0]);
  // long data: a Buffer of 16 KiB or more, and a stream, go as COM_STMT_SEND_LONG_DATA
  await conn.execute('UPDATE typed SET bl = ?, tx = ? WHERE id > ?',
    [Buffer.alloc(40000, 99), Readable.from([Buffer.from('streamed '), Buffer.from('text')]), 0]);

  const rows = [];
  for (let i = 0; i < 200; i++) rows.push([`row${i}`, i]);
  const insert = 'INSERT INTO bulk (name, n) VALUES (?, ?)';
  const inserted = await conn.batch(insert, rows);
  console.log(JSON.stringify({ bulk: insert, affected: Number(inserted.affectedRows) }));
  const updates = [];
  for (let i = 1; i <= 50; i++) updates.push([1, i]);
  const update = 'UPDATE bulk SET n = n + ? WHERE id = ?';
  const updated = await conn.batch(update, updates);
  console.log(JSON.stringify({ bulk: update, affected: Number(updated.affectedRows) }));

  await conn.query('SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1');
  await conn.query('CALL two_results(4)');
  await conn.execute('CALL two_results(?)', [3]);

  await expectError(conn.query('SELEC broken syntax'));
  await expectError(conn.query('SELECT * FROM no_such_table'));
  await expectError(conn.query("INSERT INTO items (id, name) VALUES (1, 'd')"));
  await expectError(conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [2, 'dup']));
  await expectError(conn.execute('SELECT * FROM no_such_table WHERE id = ?', [1]));

  const result = await conn.query(`SELECT LENGTH('${'x'.repeat(Number(big))}') AS n`);
  if (Number(result[0].n) !== Number(big)) throw new Error('big request lost');
  // and long data larger than a protocol packet
  const [executed] = await conn.execute('SELECT LENGTH(?) AS n', [Buffer.alloc(Number(big), 121)]);
  if (Number(executed.n) !== Number(big)) throw new Error('big long data lost');
  await conn.end();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
