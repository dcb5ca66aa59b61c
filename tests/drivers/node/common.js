// The statements both Node driver workloads run the same way (mysql2 and mariadb share
// query()/execute()): text queries, prepared statements with every parameter type,
// multi-statements, CALLs with two result sets, and errors. Each workload adds what only
// its driver has (batches, long data, the > 16 MiB request) around these.
'use strict';

async function expectError(promise) {
  try {
    await promise;
  } catch (err) {
    return err.errno;
  }
  throw new Error('expected an error');
}

// Text queries and typed prepared statements, before the driver's own part.
async function queriesAndPrepared(conn) {
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
}

// Multi-statements, CALLs and the errors every workload provokes.
async function multiCallsAndErrors(conn) {
  await conn.query('SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1');
  await conn.query('CALL two_results(4)');
  await conn.execute('CALL two_results(?)', [3]);

  await expectError(conn.query('SELEC broken syntax'));
  await expectError(conn.query('SELECT * FROM no_such_table'));
  await expectError(conn.query("INSERT INTO items (id, name) VALUES (1, 'd')"));
  await expectError(conn.execute('INSERT INTO items (id, name) VALUES (?, ?)', [2, 'dup']));
  await expectError(conn.execute('SELECT * FROM no_such_table WHERE id = ?', [1]));
}

// Runs main(), exiting 1 with the error when it fails.
function run(main) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}

module.exports = { queriesAndPrepared, multiCallsAndErrors, run };
