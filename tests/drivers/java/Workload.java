// MariaDB Connector/J with server-side prepared statements: the driver workload.
// Usage: java -cp mariadb-java-client.jar:. Workload HOST PORT DATABASE BIG_BYTES
// (DRIVER_COMPRESS=1: over the compressed protocol)
// Text queries, server-side prepared statements with every setter type (streams sent as
// long data), batches (bulk, and pipelined executes), multi-statements, a CALL returning
// two result sets, errors, and one request larger than a 16 MiB protocol packet.
// Prints {"bulk": SQL, "affected": N} per bulk execute (ROW_COUNT() right after it).

import java.io.ByteArrayInputStream;
import java.io.StringReader;
import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.Date;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Time;
import java.sql.Timestamp;
import java.sql.Types;

public final class Workload {
    private Workload() {}

    interface Action {
        void run() throws SQLException;
    }

    static void expectError(Action action) {
        try {
            action.run();
        } catch (SQLException e) {
            return;
        }
        throw new IllegalStateException("expected an error");
    }

    static void drain(Statement st, boolean hasResult) throws SQLException {
        while (true) {
            if (hasResult) {
                try (ResultSet rs = st.getResultSet()) {
                    while (rs.next()) {
                        rs.getObject(1);
                    }
                }
            } else if (st.getUpdateCount() == -1) {
                return;
            }
            hasResult = st.getMoreResults();
        }
    }

    static void batch(Connection conn, Statement text, String sql, int rows, boolean bulk) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(sql)) {
            for (int i = 0; i < rows; i++) {
                ps.setString(1, "row" + i);
                ps.setInt(2, i);
                ps.addBatch();
            }
            ps.executeBatch();
        }
        if (bulk) {
            try (ResultSet rs = text.executeQuery("SELECT ROW_COUNT()")) {
                rs.next();
                System.out.println("{\"bulk\": \"" + sql + "\", \"affected\": " + rs.getLong(1) + "}");
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String base = "jdbc:mariadb://" + args[0] + ":" + args[1] + "/" + args[2]
            + "?user=root&useServerPrepStmts=true&allowMultiQueries=true"
            + ("1".equals(System.getenv("DRIVER_COMPRESS")) ? "&useCompression=true" : "");
        int big = Integer.parseInt(args[3]);
        try (Connection conn = DriverManager.getConnection(base + "&useBulkStmts=true");
             Statement st = conn.createStatement()) {
            for (int i = 1; i <= 5; i++) {
                try (ResultSet rs = st.executeQuery("SELECT name, price FROM items WHERE id = " + i)) {
                    while (rs.next()) {
                        rs.getString(1);
                    }
                }
            }
            st.executeUpdate("UPDATE items SET qty = qty + 1 WHERE id < 5");

            try (PreparedStatement ps = conn.prepareStatement("SELECT id, name FROM items WHERE id BETWEEN ? AND ?")) {
                for (int i = 0; i < 3; i++) {
                    ps.setInt(1, i + 1);
                    ps.setLong(2, i + 10);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            rs.getString(2);
                        }
                    }
                }
            }
            try (PreparedStatement ps = conn.prepareStatement(
                    "INSERT INTO typed (ti, si, i, bi, f, d, dec_v, s, bin, bl, tx, day, dt, tm, flag, nul)"
                    + " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")) {
                ps.setByte(1, (byte) -5);
                ps.setShort(2, (short) 300);
                ps.setInt(3, -70000);
                ps.setLong(4, -(1L << 40));
                ps.setFloat(5, 1.5f);
                ps.setDouble(6, 2.25);
                ps.setBigDecimal(7, new BigDecimal("12345.678901"));
                ps.setString(8, "text \u00e9");
                ps.setBytes(9, new byte[] {0, 1, (byte) 255});
                ps.setBinaryStream(10, new ByteArrayInputStream("blob".repeat(100).getBytes()));
                ps.setCharacterStream(11, new StringReader("long text ".repeat(50)));
                ps.setDate(12, Date.valueOf("2024-02-29"));
                ps.setTimestamp(13, Timestamp.valueOf("2024-02-29 12:30:45.123456"));
                ps.setTime(14, Time.valueOf("05:06:07"));
                ps.setBoolean(15, true);
                ps.setNull(16, Types.INTEGER);
                ps.executeUpdate();
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT ti, dec_v, day, dt, tm, bl FROM typed WHERE id > ?")) {
                ps.setInt(1, 0);
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        rs.getObject(1);
                    }
                }
            }

            batch(conn, st, "INSERT INTO bulk (name, n) VALUES (?, ?)", 200, true);

            drain(st, st.execute(
                "SELECT 1; SELECT id FROM items WHERE id < 3; UPDATE items SET qty = qty + 1 WHERE id = 1"));
            drain(st, st.execute("CALL two_results(4)"));
            try (PreparedStatement ps = conn.prepareStatement("CALL two_results(?)")) {
                ps.setInt(1, 3);
                drain(ps, ps.execute());
            }

            expectError(() -> st.execute("SELEC broken syntax"));
            expectError(() -> st.executeQuery("SELECT * FROM no_such_table"));
            expectError(() -> st.executeUpdate("INSERT INTO items (id, name) VALUES (1, 'd')"));
            expectError(() -> {
                try (PreparedStatement ps = conn.prepareStatement("INSERT INTO items (id, name) VALUES (?, ?)")) {
                    ps.setInt(1, 2);
                    ps.setString(2, "dup");
                    ps.executeUpdate();
                }
            });
            expectError(() -> {
                try (PreparedStatement ps = conn.prepareStatement("SELECT * FROM no_such_table WHERE id = ?")) {
                    ps.setInt(1, 1);
                    ps.executeQuery();
                }
            });

            try (ResultSet rs = st.executeQuery("SELECT LENGTH('" + "x".repeat(big) + "')")) {
                rs.next();
                if (rs.getLong(1) != big) {
                    throw new IllegalStateException("big request lost");
                }
            }
            // and a COM_STMT_EXECUTE larger than a protocol packet: the value inline
            try (PreparedStatement ps = conn.prepareStatement("SELECT LENGTH(?)")) {
                ps.setString(1, "y".repeat(big));
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) != big) {
                        throw new IllegalStateException("big execute lost");
                    }
                }
            }
        }
        // a stock JDBC batch without bulk: executes pipelined before any response is read
        try (Connection conn = DriverManager.getConnection(base + "&useBulkStmts=false");
             Statement st = conn.createStatement()) {
            batch(conn, st, "INSERT INTO bulk (name, n) VALUES (?, ?)", 300, false);
        }
    }
}
