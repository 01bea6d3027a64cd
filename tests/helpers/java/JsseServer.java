// A JSSE TLS server on 127.0.0.1, like a Java (Tomcat) backend: a KeyManager from a PKCS#12
// keystore, a TrustManager from a truststore (PKCS#12 or PEM), client authentication required
// (or wanted, or off), optional protocols. Prints "PORT <n>" once listening, then one JSON line
// per connection: {"outcome": "ok"|"handshake_failed", "exception": ..., "message": ...,
// "protocol": ...}. Answers a request with "HTTP/1.1 200 OK". Ends when standard input closes.
//
//   java -cp DIR JsseServer --keystore F.p12 [--password PW] [--truststore F]
//        [--client-auth need|want|none] [--protocols TLSv1.2,TLSv1.3] [--ciphers A,B]

import java.io.FileInputStream;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.SocketException;
import java.nio.charset.StandardCharsets;
import java.security.KeyStore;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;

public final class JsseServer {
    public static void main(String[] args) throws Exception {
        String keystore = null;
        String password = "changeit";
        String truststore = null;
        String clientAuth = "need";
        String[] protocols = null;
        String[] ciphers = null;
        for (int i = 0; i + 1 < args.length; i += 2) {
            String v = args[i + 1];
            switch (args[i]) {
                case "--keystore": keystore = v; break;
                case "--password": password = v; break;
                case "--truststore": truststore = v; break;
                case "--client-auth": clientAuth = v; break;
                case "--protocols": protocols = v.split(","); break;
                case "--ciphers": ciphers = v.split(","); break;
                default:
                    System.err.println("JsseServer: unknown option " + args[i]);
                    System.exit(2);
            }
        }
        if (keystore == null) {
            System.err.println("JsseServer: --keystore is required");
            System.exit(2);
        }
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(keystore)) {
            ks.load(in, password.toCharArray());
        }
        KeyManagerFactory kmf =
                KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(ks, password.toCharArray());
        TrustManagerFactory tmf =
                TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(truststore == null ? null : JsseClient.loadTrust(truststore));
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);

        SSLServerSocket server = (SSLServerSocket) ctx.getServerSocketFactory()
                .createServerSocket(0, 16, InetAddress.getByName("127.0.0.1"));
        if ("need".equals(clientAuth)) {
            server.setNeedClientAuth(true);
        } else if ("want".equals(clientAuth)) {
            server.setWantClientAuth(true);
        }
        if (protocols != null) {
            server.setEnabledProtocols(protocols);
        }
        if (ciphers != null) {
            server.setEnabledCipherSuites(ciphers);
        }
        System.out.println("PORT " + server.getLocalPort());
        System.out.flush();

        Thread stopper = new Thread(() -> {
            try {
                while (System.in.read() >= 0) {
                    // wait for standard input to close
                }
            } catch (Exception e) {
                // the same: stop
            }
            try {
                server.close();
            } catch (Exception e) {
                // closing anyway
            }
        });
        stopper.setDaemon(true);
        stopper.start();

        while (true) {
            SSLSocket socket;
            try {
                socket = (SSLSocket) server.accept();
            } catch (SocketException e) {
                return;  // closed by the stopper
            }
            Thread t = new Thread(() -> serve(socket));
            t.setDaemon(true);
            t.start();
        }
    }

    static void serve(SSLSocket socket) {
        String line;
        try (SSLSocket s = socket) {
            s.setSoTimeout(10000);
            s.startHandshake();
            String protocol = s.getSession().getProtocol();
            InputStream in = s.getInputStream();
            int c;
            int tail = 0;
            // read the request head up to its blank line (or end of stream)
            while ((c = in.read()) >= 0) {
                tail = (tail << 8) | c;
                if (tail == 0x0d0a0d0a) {
                    break;
                }
            }
            OutputStream out = s.getOutputStream();
            out.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .getBytes(StandardCharsets.US_ASCII));
            out.flush();
            line = "{\"outcome\": \"ok\", \"exception\": null, \"message\": null, \"protocol\": "
                    + JsseClient.quote(protocol) + "}";
        } catch (Exception e) {
            line = "{\"outcome\": \"handshake_failed\", \"exception\": "
                    + JsseClient.quote(e.getClass().getName()) + ", \"message\": "
                    + JsseClient.quote(e.getMessage()) + ", \"protocol\": null}";
        }
        synchronized (System.out) {
            System.out.println(line);
            System.out.flush();
        }
    }
}
