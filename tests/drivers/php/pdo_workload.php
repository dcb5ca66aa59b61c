<?php
// PHP PDO_MySQL with emulated prepares off: the driver workload.
// Usage: php pdo_workload.php HOST PORT DATABASE BIG_BYTES
// Text queries, server-side prepared statements with every parameter type (a LOB bound as
// a stream), a loop of executes as the batch, multi-statements, a CALL returning two
// result sets, errors, and one request larger than a 16 MiB protocol packet.
[, $host, $port, $database, $big] = $argv;
$db = new PDO("mysql:host=$host;port=$port;dbname=$database", 'root', '', [
    PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
    PDO::ATTR_EMULATE_PREPARES => false,
    PDO::MYSQL_ATTR_MULTI_STATEMENTS => true,
    PDO::MYSQL_ATTR_COMPRESS => getenv('DRIVER_COMPRESS') === '1',  // compressed protocol
]);

function expect_error(callable $run): void {
    try {
        $run();
    } catch (PDOException $e) {
        return;
    }
    throw new RuntimeException('expected an error');
}

for ($i = 1; $i <= 5; $i++) {
    $db->query("SELECT name, price FROM items WHERE id = $i")->fetchAll();
}
$db->exec('UPDATE items SET qty = qty + 1 WHERE id < 5');

$select = $db->prepare('SELECT id, name FROM items WHERE id BETWEEN ? AND ?');
for ($i = 0; $i < 3; $i++) {
    $select->execute([$i + 1, $i + 10]);
    $select->fetchAll();
}
$select = null;

$insert = $db->prepare(
    'INSERT INTO typed (ti, si, i, bi, f, d, dec_v, s, bin, bl, tx, day, dt, tm, flag, nul)'
    . ' VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
);
$blob = fopen('php://memory', 'r+');
fwrite($blob, str_repeat('blob', 100));
rewind($blob);
$insert->bindValue(1, -5, PDO::PARAM_INT);
$insert->bindValue(2, 300, PDO::PARAM_INT);
$insert->bindValue(3, -70000, PDO::PARAM_INT);
$insert->bindValue(4, -(2 ** 40), PDO::PARAM_INT);
$insert->bindValue(5, 1.5);
$insert->bindValue(6, 2.25);
$insert->bindValue(7, '12345.678901', PDO::PARAM_STR);
$insert->bindValue(8, 'text é', PDO::PARAM_STR);
$insert->bindValue(9, "\x00\x01\xff", PDO::PARAM_LOB);
$insert->bindParam(10, $blob, PDO::PARAM_LOB);
$insert->bindValue(11, str_repeat('long text ', 50), PDO::PARAM_STR);
$insert->bindValue(12, '2024-02-29', PDO::PARAM_STR);
$insert->bindValue(13, '2024-02-29 12:30:45.123456', PDO::PARAM_STR);
$insert->bindValue(14, '05:06:07.000008', PDO::PARAM_STR);
$insert->bindValue(15, true, PDO::PARAM_BOOL);
$insert->bindValue(16, null, PDO::PARAM_NULL);
$insert->execute();
$insert = null;

$typed = $db->prepare('SELECT ti, dec_v, day, dt, tm, bl FROM typed WHERE id > ?');
$typed->execute([0]);
$typed->fetchAll();
$typed = null;

$batch = $db->prepare('INSERT INTO bulk (name, n) VALUES (?, ?)');
$db->beginTransaction();
for ($i = 0; $i < 100; $i++) {
    $batch->execute(["row$i", $i]);
}
$db->commit();
$batch = null;

$db->setAttribute(PDO::ATTR_EMULATE_PREPARES, true);  // a multi-statement cannot be prepared
$multi = $db->query('SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1');
do {
    if ($multi->columnCount() > 0) {
        $multi->fetchAll();
    }
} while ($multi->nextRowset());
$multi = null;
$db->setAttribute(PDO::ATTR_EMULATE_PREPARES, false);

$call = $db->prepare('CALL two_results(?)');
$call->execute([3]);
do {
    if ($call->columnCount() > 0) {
        $call->fetchAll();
    }
} while ($call->nextRowset());
$call = null;

expect_error(fn() => $db->query('SELEC broken syntax'));
expect_error(fn() => $db->query('SELECT * FROM no_such_table'));
expect_error(fn() => $db->exec("INSERT INTO items (id, name) VALUES (1, 'd')"));
expect_error(fn() => $db->prepare('INSERT INTO items (id, name) VALUES (?, ?)')->execute([2, 'dup']));
expect_error(fn() => $db->prepare('SELECT * FROM no_such_table WHERE id = ?'));

$length = $db->query("SELECT LENGTH('" . str_repeat('x', (int)$big) . "')")->fetchColumn();
if ((int)$length !== (int)$big) {
    throw new RuntimeException('big request lost');
}
$db = null;
