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
const common = require('./common');

async function main() {
  const [host, port, database, big] = process.argv.slice(2);
  const conn = await mariadb.createConnection({
    host, port: Number(port), user: 'root', password: '', database, multipleStatements: true,
    bigIntAsNumber: false, maxAllowedPacket: 64 * 1024 * 1024,
    compress: process.env.DRIVER_COMPRESS === '1',
  });
  await common.queriesAndPrepared(conn);

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

  await common.multiCallsAndErrors(conn);

  const result = await conn.query(`SELECT LENGTH('${'x'.repeat(Number(big))}') AS n`);
  if (Number(result[0].n) !== Number(big)) throw new Error('big request lost');
  // and long data larger than a protocol packet
  const [executed] = await conn.execute('SELECT LENGTH(?) AS n', [Buffer.alloc(Number(big), 121)]);
  if (Number(executed.n) !== Number(big)) throw new Error('big long data lost');
  await conn.end();
}

common.run(main);
