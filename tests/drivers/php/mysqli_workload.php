<?php
// PHP mysqli (mysqlnd): the driver workload. Usage: php mysqli_workload.php HOST PORT DATABASE BIG_BYTES
// Text queries, server-side prepared statements with every bind type (i, d, s, b with
// send_long_data), a loop of executes as the batch, multi_query, a CALL returning two result
// sets, errors, and one request larger than a 16 MiB protocol packet.
[, $host, $port, $database, $big] = $argv;
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
$db = mysqli_init();
$flags = getenv('DRIVER_COMPRESS') === '1' ? MYSQLI_CLIENT_COMPRESS : 0;  // compressed protocol
$db->real_connect($host, 'root', '', $database, (int)$port, null, $flags);

function expect_error(callable $run): void {
    try {
        $run();
    } catch (mysqli_sql_exception $e) {
        return;
    }
    throw new RuntimeException('expected an error');
}

for ($i = 1; $i <= 5; $i++) {
    $db->query("SELECT name, price FROM items WHERE id = $i")->fetch_all();
}
$db->query('UPDATE items SET qty = qty + 1 WHERE id < 5');

$select = $db->prepare('SELECT id, name FROM items WHERE id BETWEEN ? AND ?');
for ($i = 0; $i < 3; $i++) {
    $lo = $i + 1;
    $hi = $i + 10;
    $select->bind_param('ii', $lo, $hi);
    $select->execute();
    $select->get_result()->fetch_all();
}
$select->close();

$insert = $db->prepare(
    'INSERT INTO typed (ti, si, i, bi, f, d, dec_v, s, bin, bl, tx, day, dt, tm, flag, nul)'
    . ' VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
);
$ti = -5; $si = 300; $iv = -70000; $bi = -(2 ** 40); $f = 1.5; $d = 2.25; $dec = '12345.678901';
$s = 'text é'; $bin = "\x00\x01\xff"; $bl = null; $tx = str_repeat('long text ', 50);
$day = '2024-02-29'; $dt = '2024-02-29 12:30:45.123456'; $tm = '05:06:07.000008'; $flag = 1; $nul = null;
$insert->bind_param('iiiiddssbbssssii', $ti, $si, $iv, $bi, $f, $d, $dec, $s, $bin, $bl, $tx, $day, $dt, $tm, $flag, $nul);
$insert->send_long_data(8, "\x00\x01");
$insert->send_long_data(8, "\xff");
$insert->send_long_data(9, str_repeat('blob', 50));
$insert->send_long_data(9, str_repeat('blob', 50));
$insert->execute();
$insert->close();

$typed = $db->prepare('SELECT ti, dec_v, day, dt, tm, bl FROM typed WHERE id > ?');
$zero = 0;
$typed->bind_param('i', $zero);
$typed->execute();
$typed->get_result()->fetch_all();
$typed->close();

$batch = $db->prepare('INSERT INTO bulk (name, n) VALUES (?, ?)');
for ($i = 0; $i < 100; $i++) {
    $name = "row$i";
    $batch->bind_param('si', $name, $i);
    $batch->execute();
}
$batch->close();

$db->multi_query('SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1');
do {
    if ($result = $db->store_result()) {
        $result->free();
    }
} while ($db->more_results() && $db->next_result());

$db->multi_query('CALL two_results(4)');
do {
    if ($result = $db->store_result()) {
        $result->free();
    }
} while ($db->more_results() && $db->next_result());

$call = $db->prepare('CALL two_results(?)');
$lim = 3;
$call->bind_param('i', $lim);
$call->execute();
do {
    if ($result = $call->get_result()) {
        $result->fetch_all();
    }
} while ($call->more_results() && $call->next_result());
$call->close();

expect_error(fn() => $db->query('SELEC broken syntax'));
expect_error(fn() => $db->query('SELECT * FROM no_such_table'));
expect_error(fn() => $db->query("INSERT INTO items (id, name) VALUES (1, 'd')"));
expect_error(function () use ($db) {
    $dup = $db->prepare('INSERT INTO items (id, name) VALUES (?, ?)');
    $id = 2; $name = 'dup';
    $dup->bind_param('is', $id, $name);
    try {
        $dup->execute();
    } finally {
        $dup->close();
    }
});
expect_error(fn() => $db->prepare('SELECT * FROM no_such_table WHERE id = ?'));

$row = $db->query("SELECT LENGTH('" . str_repeat('x', (int)$big) . "')")->fetch_row();
if ((int)$row[0] !== (int)$big) {
    throw new RuntimeException('big request lost');
}
$db->close();
