SELECT name, price FROM items WHERE id = 1;
SELECT name, price FROM items WHERE id = 2;
SELECT name, price FROM items WHERE id = 3;
UPDATE items SET qty = qty + 1 WHERE id < 5;
INSERT INTO bulk (name, n) VALUES ('a', 1), ('b', 2), ('c', 3);
PREPARE pick FROM 'SELECT id, name FROM items WHERE id BETWEEN ? AND ?';
SET @lo = 1, @hi = 10;
EXECUTE pick USING @lo, @hi;
EXECUTE pick USING 2, 20;
DEALLOCATE PREPARE pick;
PREPARE typed_insert FROM 'INSERT INTO typed (ti, bi, d, dec_v, s, bin, day, dt, tm, flag, nul) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
EXECUTE typed_insert USING -5, -1099511627776, 2.25, 12345.678901, 'text', X'0001ff', DATE'2024-02-29', TIMESTAMP'2024-02-29 12:30:45.123456', TIME'05:06:07', TRUE, NULL;
DEALLOCATE PREPARE typed_insert;
DELIMITER //
SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1//
DELIMITER ;
CALL two_results(4);
SELEC broken syntax;
SELECT * FROM no_such_table;
INSERT INTO items (id, name) VALUES (1, 'd');
