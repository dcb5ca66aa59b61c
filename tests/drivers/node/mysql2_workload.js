// Node mysql2: the driver workload. Usage: node mysql2_workload.js HOST PORT DATABASE BIG_BYTES
// (DRIVER_COMPRESS=1: over the compressed protocol)
// Text queries, server-side prepared statements (execute) with every parameter type, a
// multi-row batch insert, multi-statements, a CALL returning two result sets, errors, and
// one request larger than a 16 MiB protocol packet.
'use strict';
const mysql = require('mysql2/promise');
const common = require('./common');

async function main() {
  const [host, port, database, big] = process.argv.slice(2);
  const conn = await mysql.createConnection({
    host, port: Number(port), user: 'root', password: '', database, multipleStatements: true,
    compress: process.env.DRIVER_COMPRESS === '1',
  });
  await common.queriesAndPrepared(conn);

  const rows = [];
  for (let i = 0; i < 200; i++) rows.push([`row${i}`, i]);
  await conn.query('INSERT INTO bulk (name, n) VALUES ?', [rows]);

  await common.multiCallsAndErrors(conn);

  const [result] = await conn.query(`SELECT LENGTH('${'x'.repeat(Number(big))}') AS n`);
  if (Number(result[0].n) !== Number(big)) throw new Error('big request lost');
  // and a COM_STMT_EXECUTE larger than a protocol packet: the value inline
  const [executed] = await conn.execute('SELECT LENGTH(?) AS n', ['y'.repeat(Number(big))]);
  if (Number(executed[0].n) !== Number(big)) throw new Error('big execute lost');
  await conn.end();
}

common.run(main);
