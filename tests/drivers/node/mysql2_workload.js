// Node mysql2: the driver workload. Usage: node mysql2_workload.js HOST PORT DATABASE BIG_BYTES
// (DRIVER_COMPRESS=1: over the compressed protocol)
// Text queries, server-side prepared statements (execute) with every parameter type, a
// multi-row batch insert, multi-statements, a CALL returning two result sets, errors, and
// one request larger than a 16 MiB protocol packet.
'use strict';
const mysql = require('mysql2/promise');

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
  const conn = await mysql.createConnection({
    host, port: Number(port), user: 'root', password: '', database, multipleStatements: true,
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

  const rows = [];
  for (let i = 0; i < 200; i++) rows.push([`row${i}`, i]);
  await conn.query('INSERT INTO bulk (name, n) VALUES ?', [rows]);

  await conn.query('SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1');
  await conn.query('CALL two_results(4)');
  await conn.execute('CALL two_results(?)', [3]);

  await expectError(conn.query('SELEC broken syntax'));
  await expectError(conn.query('SELECT * FROM no_such_table'));
  await expectError(conn.query("INSERT INTO items (id, name) VALUES (1, 'd')"));
  await expectError(conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [2, 'dup']));
  await expectError(conn.execute('SELECT * FROM no_such_table WHERE id = ?', [1]));

  const [result] = await conn.query(`SELECT LENGTH('${'x'.repeat(Number(big))}') AS n`);
  if (Number(result[0].n) !== Number(big)) throw new Error('big request lost');
  // and a COM_STMT_EXECUTE larger than a protocol packet: the value inline
  const [executed] = await conn.execute('SELECT LENGTH(?) AS n', ['y'.repeat(Number(big))]);
  if (Number(executed[0].n) !== Number(big)) throw new Error('big execute lost');
  await conn.end();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
