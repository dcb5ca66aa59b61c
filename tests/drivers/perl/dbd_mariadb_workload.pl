#!/usr/bin/perl
# Perl DBD::MariaDB with server-side prepare: the driver workload.
# Usage: dbd_mariadb_workload.pl HOST PORT DATABASE BIG_BYTES
# Text queries (do without placeholders), server-side prepared statements with every SQL
# type, execute_array as the batch, multi-statements, a CALL returning two result sets,
# errors, and one request larger than a 16 MiB protocol packet.
use strict;
use warnings;
use DBI qw(:sql_types);

my ($host, $port, $database, $big) = @ARGV;
my $compress = ($ENV{DRIVER_COMPRESS} // '') eq '1' ? ';mariadb_compression=1' : '';
my $dbh = DBI->connect(
    "DBI:MariaDB:database=$database;host=$host;port=$port$compress", 'root', '',
    { RaiseError => 1, PrintError => 0, AutoCommit => 1,
      mariadb_server_prepare => 1, mariadb_multi_statements => 1 },
) or die $DBI::errstr;
my %text = (mariadb_server_prepare => 0);

sub expect_error {
    my ($run) = @_;
    my $ok = eval { $run->(); 1 };
    die 'expected an error' if $ok;
}

for my $i (1 .. 5) {
    $dbh->selectall_arrayref("SELECT name, price FROM items WHERE id = $i", \%text);
}
$dbh->do('UPDATE items SET qty = qty + 1 WHERE id < 5', \%text);

my $select = $dbh->prepare('SELECT id, name FROM items WHERE id BETWEEN ? AND ?');
for my $i (0 .. 2) {
    $select->execute($i + 1, $i + 10);
    $select->fetchall_arrayref;
}
$select->finish;
undef $select;

my $insert = $dbh->prepare(
    'INSERT INTO typed (ti, si, i, bi, f, d, dec_v, s, bin, bl, tx, day, dt, tm, flag, nul)'
    . ' VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
my @typed = (
    [-5, SQL_TINYINT], [300, SQL_SMALLINT], [-70000, SQL_INTEGER], [-(2**40), SQL_BIGINT],
    [1.5, SQL_FLOAT], [2.25, SQL_DOUBLE], ['12345.678901', SQL_DECIMAL], ["text \x{e9}", SQL_VARCHAR],
    ["\x00\x01\xff", SQL_VARBINARY], ['blob' x 100, SQL_BLOB], ['long text ' x 50, SQL_LONGVARCHAR],
    ['2024-02-29', SQL_DATE], ['2024-02-29 12:30:45.123456', SQL_DATETIME], ['05:06:07.000008', SQL_TIME],
    [1, SQL_BOOLEAN], [undef, SQL_INTEGER],
);
for my $n (0 .. $#typed) {
    $insert->bind_param($n + 1, $typed[$n][0], $typed[$n][1]);
}
$insert->execute;
undef $insert;

$dbh->selectall_arrayref('SELECT ti, dec_v, day, dt, tm, bl FROM typed WHERE id > ?', undef, 0);

my $batch = $dbh->prepare('INSERT INTO bulk (name, n) VALUES (?, ?)');
my @names = map { "row$_" } 0 .. 99;
my @numbers = 0 .. 99;
$batch->execute_array({}, \@names, \@numbers);
undef $batch;

my $multi = $dbh->prepare(
    'SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1', \%text);
$multi->execute;
do { $multi->fetchall_arrayref if $multi->{NUM_OF_FIELDS} } while ($multi->more_results);
undef $multi;

# DBD::MariaDB cannot read several result sets of a server-side prepared statement
my $call = $dbh->prepare('CALL two_results(?)', \%text);
$call->execute(3);
do { $call->fetchall_arrayref if $call->{NUM_OF_FIELDS} } while ($call->more_results);
undef $call;

expect_error(sub { $dbh->do('SELEC broken syntax', \%text) });
expect_error(sub { $dbh->do('SELECT * FROM no_such_table', \%text) });
expect_error(sub { $dbh->do("INSERT INTO items (id, name) VALUES (1, 'd')", \%text) });
expect_error(sub { $dbh->do('INSERT INTO items (id, name) VALUES (?, ?)', undef, 2, 'dup') });
expect_error(sub { $dbh->prepare('SELECT * FROM no_such_table WHERE id = ?')->execute(1) });

my ($length) = $dbh->selectrow_array("SELECT LENGTH('" . ('x' x $big) . "')", \%text);
die 'big request lost' unless $length == $big;
$dbh->disconnect;
