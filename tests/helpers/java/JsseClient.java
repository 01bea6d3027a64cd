// A JSSE client that connects the way the Message Processor's NIO client does: an SSLEngine over a
// non-blocking SocketChannel, a KeyManager from a PKCS#12 keystore, a TrustManager from a
// truststore. It prints ONE JSON line: the outcome and the exception's getMessage(), the ground
// truth for the texts the MP logs after "handshake failed, message: ".
//
//   java -cp DIR JsseClient --host H --port P [--keystore F.p12 --password PW]
//        [--truststore F.p12|F.pem | --trust-all] [--protocols TLSv1.2,TLSv1.3] [--ciphers A,B]
//        [--sni NAME] [--verify-host] [--timeout-ms N]
//
// Output: {"outcome": "ok"|"handshake_failed"|"read_failed"|"connect_failed", "exception": class,
//          "message": getMessage(), "sent_certificate": bool, "issuers": [RFC 2253 names],
//          "asked": the key manager was asked for a client alias, "key_types": [what it was asked
//          for], "chosen_alias": its answer or null,
//          "protocol": negotiated or null, "http_status": status line or null}

import java.io.ByteArrayInputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.KeyStore;
import java.security.Principal;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import javax.net.ssl.KeyManager;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SNIHostName;
import javax.net.ssl.SNIServerName;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLEngineResult.HandshakeStatus;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManager;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509ExtendedKeyManager;
import javax.net.ssl.X509ExtendedTrustManager;
import javax.net.ssl.X509KeyManager;
import javax.security.auth.x500.X500Principal;

public final class JsseClient {

    /** Thrown by the I/O loop when the deadline passes. */
    static final class Timeout extends SocketTimeoutException {
        private static final long serialVersionUID = 1L;

        Timeout(String what) {
            super(what);
        }
    }

    /**
     * The KeyManager the MP would use, watched: whether it was asked for a client alias at all,
     * for which key types and CA names, and which alias it chose (null: none, an empty
     * Certificate message).
     */
    static final class WatchingKeyManager extends X509ExtendedKeyManager {
        final X509KeyManager inner;
        final Set<String> issuers = new LinkedHashSet<>();
        final Set<String> keyTypes = new LinkedHashSet<>();
        boolean asked;
        boolean chose;
        String alias;

        private void noteTypes(String[] types) {
            asked = true;
            if (types != null) {
                keyTypes.addAll(Arrays.asList(types));
            }
        }

        private String chosen(String picked) {
            if (picked != null) {
                chose = true;
                alias = picked;
            }
            return picked;
        }

        WatchingKeyManager(X509KeyManager inner) {
            this.inner = inner;
        }

        private void note(Principal[] names) {
            if (names == null) {
                return;
            }
            for (Principal p : names) {
                if (p instanceof X500Principal) {
                    issuers.add(((X500Principal) p).getName(X500Principal.RFC2253));
                } else if (p != null) {
                    issuers.add(p.getName());
                }
            }
        }

        @Override
        public String chooseEngineClientAlias(String[] keyType, Principal[] issuers, SSLEngine e) {
            note(issuers);
            noteTypes(keyType);
            return chosen(inner instanceof X509ExtendedKeyManager
                    ? ((X509ExtendedKeyManager) inner).chooseEngineClientAlias(keyType, issuers, e)
                    : inner.chooseClientAlias(keyType, issuers, null));
        }

        @Override
        public String chooseClientAlias(String[] keyType, Principal[] issuers, Socket socket) {
            note(issuers);
            noteTypes(keyType);
            return chosen(inner.chooseClientAlias(keyType, issuers, socket));
        }

        @Override
        public String[] getClientAliases(String keyType, Principal[] issuers) {
            return inner.getClientAliases(keyType, issuers);
        }

        @Override
        public String[] getServerAliases(String keyType, Principal[] issuers) {
            return inner.getServerAliases(keyType, issuers);
        }

        @Override
        public String chooseServerAlias(String keyType, Principal[] issuers, Socket socket) {
            return inner.chooseServerAlias(keyType, issuers, socket);
        }

        @Override
        public X509Certificate[] getCertificateChain(String alias) {
            return inner.getCertificateChain(alias);
        }

        @Override
        public PrivateKey getPrivateKey(String alias) {
            return inner.getPrivateKey(alias);
        }
    }

    /** Trusts every server: for scenarios about everything but the server's certificate. */
    static final class TrustAll extends X509ExtendedTrustManager {
        @Override
        public void checkClientTrusted(X509Certificate[] c, String a, Socket s) {}

        @Override
        public void checkServerTrusted(X509Certificate[] c, String a, Socket s) {}

        @Override
        public void checkClientTrusted(X509Certificate[] c, String a, SSLEngine e) {}

        @Override
        public void checkServerTrusted(X509Certificate[] c, String a, SSLEngine e) {}

        @Override
        public void checkClientTrusted(X509Certificate[] c, String a) {}

        @Override
        public void checkServerTrusted(X509Certificate[] c, String a) {}

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return new X509Certificate[0];
        }
    }

    String host;
    int port;
    String keystore;
    String password = "changeit";
    String truststore;
    boolean trustAll;
    String[] protocols;
    String[] ciphers;
    String sni;
    boolean verifyHost;
    long timeoutMs = 15000;
    String request = "HEAD";

    String outcome = "ok";
    Throwable error;
    String protocol;
    String httpStatus;
    WatchingKeyManager keyManager;

    public static void main(String[] args) {
        JsseClient client = new JsseClient();
        try {
            client.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("JsseClient: " + e.getMessage());
            System.exit(2);
        }
        client.run();
        System.out.println(client.json());
        System.out.flush();
    }

    void parse(String[] args) {
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            switch (a) {
                case "--trust-all":
                    trustAll = true;
                    continue;
                case "--verify-host":
                    verifyHost = true;
                    continue;
                default:
                    break;
            }
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException("missing value after " + a);
            }
            String v = args[++i];
            switch (a) {
                case "--host": host = v; break;
                case "--port": port = Integer.parseInt(v); break;
                case "--keystore": keystore = v; break;
                case "--password": password = v; break;
                case "--truststore": truststore = v; break;
                case "--protocols": protocols = v.split(","); break;
                case "--ciphers": ciphers = v.split(","); break;
                case "--sni": sni = v; break;
                case "--timeout-ms": timeoutMs = Long.parseLong(v); break;
                case "--request": request = v; break;
                default: throw new IllegalArgumentException("unknown option " + a);
            }
        }
        if (host == null || port == 0) {
            throw new IllegalArgumentException("--host and --port are required");
        }
    }

    SSLContext context() throws Exception {
        KeyManager[] kms = null;
        if (keystore != null) {
            KeyStore ks = KeyStore.getInstance("PKCS12");
            try (InputStream in = new FileInputStream(keystore)) {
                ks.load(in, password.toCharArray());
            }
            KeyManagerFactory kmf =
                    KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(ks, password.toCharArray());
            for (KeyManager km : kmf.getKeyManagers()) {
                if (km instanceof X509KeyManager) {
                    keyManager = new WatchingKeyManager((X509KeyManager) km);
                }
            }
        } else {
            // No keystore: a KeyManager with nothing to offer, still told the CA names.
            KeyStore empty = KeyStore.getInstance("PKCS12");
            empty.load(null, null);
            KeyManagerFactory kmf =
                    KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(empty, new char[0]);
            keyManager = new WatchingKeyManager((X509KeyManager) kmf.getKeyManagers()[0]);
        }
        kms = new KeyManager[] {keyManager};
        TrustManager[] tms;
        if (trustAll) {
            tms = new TrustManager[] {new TrustAll()};
        } else {
            KeyStore ts = null;
            if (truststore != null) {
                ts = loadTrust(truststore);
            }
            TrustManagerFactory tmf =
                    TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(ts);
            tms = tmf.getTrustManagers();
        }
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kms, tms, null);
        return ctx;
    }

    static KeyStore loadTrust(String path) throws Exception {
        byte[] bytes = Files.readAllBytes(Paths.get(path));
        String head = new String(bytes, 0, Math.min(bytes.length, 64), StandardCharsets.US_ASCII);
        KeyStore ks = KeyStore.getInstance("PKCS12");
        if (head.contains("-----BEGIN")) {
            ks.load(null, null);
            CertificateFactory cf = CertificateFactory.getInstance("X.509");
            Collection<? extends Certificate> certs =
                    cf.generateCertificates(new ByteArrayInputStream(bytes));
            int n = 0;
            for (Certificate c : certs) {
                ks.setCertificateEntry("ca-" + n++, c);
            }
        } else {
            ks.load(new ByteArrayInputStream(bytes), "changeit".toCharArray());
        }
        return ks;
    }

    void run() {
        SocketChannel channel;
        long deadline = System.currentTimeMillis() + timeoutMs;
        SSLEngine engine;
        try {
            SSLContext ctx = context();
            String peer = sni != null ? sni : host;
            engine = ctx.createSSLEngine(peer, port);
            engine.setUseClientMode(true);
            SSLParameters params = engine.getSSLParameters();
            if (sni != null) {
                List<SNIServerName> names = new ArrayList<>();
                names.add(new SNIHostName(sni));
                params.setServerNames(names);
            } else {
                params.setServerNames(Collections.<SNIServerName>emptyList());  // like the MP
            }
            if (protocols != null) {
                params.setProtocols(protocols);
            }
            if (ciphers != null) {
                params.setCipherSuites(ciphers);
            }
            if (verifyHost) {
                params.setEndpointIdentificationAlgorithm("HTTPS");
            }
            engine.setSSLParameters(params);
        } catch (Exception e) {
            fail("connect_failed", e);
            return;
        }
        try {
            channel = SocketChannel.open();
            channel.socket().connect(new InetSocketAddress(host, port), (int) timeoutMs);
            channel.configureBlocking(false);
        } catch (IOException e) {
            fail("connect_failed", e);
            return;
        }
        try (Selector selector = Selector.open(); SocketChannel ch = channel) {
            Io io = new Io(engine, ch, selector, deadline);
            try {
                engine.beginHandshake();
                io.handshake();
                protocol = engine.getSession().getProtocol();
            } catch (Exception e) {
                fail("handshake_failed", e);
                return;
            }
            try {
                String req = request + " / HTTP/1.1\r\nHost: " + host + ":" + port
                        + "\r\nConnection: close\r\n\r\n";
                io.write(ByteBuffer.wrap(req.getBytes(StandardCharsets.US_ASCII)));
                String reply = io.readLine();
                if (reply != null && reply.startsWith("HTTP/")) {
                    httpStatus = reply;
                }
            } catch (Timeout e) {
                // no reply in time: the handshake held, nothing was refused
            } catch (Exception e) {
                fail("read_failed", e);
            }
        } catch (IOException e) {
            fail("read_failed", e);
        }
    }

    void fail(String what, Throwable e) {
        outcome = what;
        error = e;
    }

    /** The SSLEngine loop over the non-blocking channel. */
    static final class Io {
        final SSLEngine engine;
        final SocketChannel ch;
        final Selector selector;
        final long deadline;
        ByteBuffer netIn;
        ByteBuffer netOut;
        int packetSize;
        ByteBuffer appIn;
        final ByteBuffer empty = ByteBuffer.allocate(0);

        Io(SSLEngine engine, SocketChannel ch, Selector selector, long deadline)
                throws IOException {
            this.engine = engine;
            this.ch = ch;
            this.selector = selector;
            this.deadline = deadline;
            int packet = engine.getSession().getPacketBufferSize();
            int app = engine.getSession().getApplicationBufferSize();
            netIn = ByteBuffer.allocate(packet);
            packetSize = packet;
            netOut = ByteBuffer.allocate(4 * packet);  // room for a whole flight
            appIn = ByteBuffer.allocate(app);
            ch.register(selector, 0);
        }

        void await(int ops) throws IOException {
            long left = deadline - System.currentTimeMillis();
            if (left <= 0) {
                throw new Timeout("timed out");
            }
            SelectionKey key = ch.keyFor(selector);
            key.interestOps(ops);
            selector.select(left);
            selector.selectedKeys().clear();
        }

        void flush() throws IOException {
            netOut.flip();
            while (netOut.hasRemaining()) {
                if (ch.write(netOut) == 0) {
                    await(SelectionKey.OP_WRITE);
                }
            }
            netOut.clear();
        }

        /**
         * Send the flight; when the peer has already refused it (a Java server closes right after
         * its alert, so the write fails), the alert it sent is the failure, as a client reading
         * before it writes would see it.
         */
        void flushInHandshake() throws IOException {
            try {
                flush();
            } catch (IOException writeFailed) {
                netOut.clear();
                try {
                    ch.read(netIn);
                } catch (IOException readFailed) {
                    throw writeFailed;
                }
                netIn.flip();
                try {
                    engine.unwrap(netIn, appIn);  // throws on the peer's alert
                } finally {
                    netIn.compact();
                }
                throw writeFailed;
            }
        }

        /** Read more bytes from the network; false at end of stream. */
        boolean fill() throws IOException {
            while (true) {
                int n = ch.read(netIn);
                if (n < 0) {
                    return false;
                }
                if (n > 0) {
                    return true;
                }
                await(SelectionKey.OP_READ);
            }
        }

        void handshake() throws IOException {
            HandshakeStatus hs = engine.getHandshakeStatus();
            while (hs != HandshakeStatus.FINISHED && hs != HandshakeStatus.NOT_HANDSHAKING) {
                switch (hs) {
                    case NEED_TASK: {
                        Runnable task;
                        while ((task = engine.getDelegatedTask()) != null) {
                            task.run();
                        }
                        hs = engine.getHandshakeStatus();
                        break;
                    }
                    case NEED_WRAP: {
                        SSLEngineResult r = engine.wrap(empty, netOut);
                        if (r.getHandshakeStatus() == HandshakeStatus.NEED_WRAP
                                && r.getStatus() == SSLEngineResult.Status.OK
                                && netOut.remaining() >= packetSize) {
                            hs = r.getHandshakeStatus();  // more of the flight: one write for it
                            break;
                        }
                        flushInHandshake();
                        if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                            hs = r.getHandshakeStatus();
                            if (hs == HandshakeStatus.NOT_HANDSHAKING) {
                                throw new SSLException("engine closed during handshake");
                            }
                            break;
                        }
                        hs = r.getHandshakeStatus();
                        break;
                    }
                    case NEED_UNWRAP:
                    case NEED_UNWRAP_AGAIN: {
                        netIn.flip();
                        SSLEngineResult r = engine.unwrap(netIn, appIn);
                        netIn.compact();
                        hs = r.getHandshakeStatus();
                        if (r.getStatus() == SSLEngineResult.Status.BUFFER_UNDERFLOW) {
                            if (!fill()) {
                                // the peer closed: what the MP's NIO client does, closeInbound()
                                engine.closeInbound();
                                throw new SSLException("end of stream during handshake");
                            }
                        } else if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                            if (hs == HandshakeStatus.NOT_HANDSHAKING) {
                                throw new SSLException("engine closed during handshake");
                            }
                        }
                        break;
                    }
                    default:
                        throw new IllegalStateException("handshake status " + hs);
                }
            }
        }

        void write(ByteBuffer data) throws IOException {
            while (data.hasRemaining()) {
                SSLEngineResult r = engine.wrap(data, netOut);
                flush();
                if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                    throw new SSLException("engine closed before the request was sent");
                }
            }
        }

        /** The first line of the reply, or null at end of stream without one. */
        String readLine() throws IOException {
            StringBuilder line = new StringBuilder();
            while (true) {
                netIn.flip();
                SSLEngineResult r = engine.unwrap(netIn, appIn);
                netIn.compact();
                if (r.getHandshakeStatus() == HandshakeStatus.NEED_TASK) {
                    Runnable task;
                    while ((task = engine.getDelegatedTask()) != null) {
                        task.run();
                    }
                }
                if (r.getHandshakeStatus() == HandshakeStatus.NEED_WRAP) {
                    engine.wrap(empty, netOut);
                    flush();
                }
                appIn.flip();
                while (appIn.hasRemaining()) {
                    char c = (char) (appIn.get() & 0xff);
                    if (c == '\n') {
                        appIn.compact();
                        return line.toString().trim();
                    }
                    line.append(c);
                }
                appIn.compact();
                if (r.getStatus() == SSLEngineResult.Status.CLOSED) {
                    return line.length() > 0 ? line.toString().trim() : null;
                }
                if (r.getStatus() == SSLEngineResult.Status.BUFFER_UNDERFLOW
                        || r.bytesConsumed() == 0) {
                    if (!fill()) {
                        engine.closeInbound();  // throws without the peer's close_notify
                        return line.length() > 0 ? line.toString().trim() : null;
                    }
                }
            }
        }
    }

    static String quote(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        return b.append('"').toString();
    }

    String json() {
        StringBuilder issuers = new StringBuilder("[");
        if (keyManager != null) {
            String sep = "";
            for (String name : keyManager.issuers) {
                issuers.append(sep).append(quote(name));
                sep = ", ";
            }
        }
        issuers.append("]");
        StringBuilder types = new StringBuilder("[");
        if (keyManager != null) {
            String sep = "";
            for (String type : keyManager.keyTypes) {
                types.append(sep).append(quote(type));
                sep = ", ";
            }
        }
        types.append("]");
        return "{\"outcome\": " + quote(outcome)
                + ", \"exception\": " + quote(error == null ? null : error.getClass().getName())
                + ", \"message\": " + quote(error == null ? null : error.getMessage())
                + ", \"sent_certificate\": " + (keyManager != null && keyManager.chose)
                + ", \"issuers\": " + issuers
                + ", \"asked\": " + (keyManager != null && keyManager.asked)
                + ", \"key_types\": " + types
                + ", \"chosen_alias\": " + quote(keyManager == null ? null : keyManager.alias)
                + ", \"protocol\": " + quote(protocol)
                + ", \"http_status\": " + quote(httpStatus) + "}";
    }
}
