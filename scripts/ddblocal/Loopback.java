// Loopback starts DynamoDB Local bound to 127.0.0.1 only.
//
// DynamoDB Local has no host option and its Jetty server listens on every
// interface. This wrapper builds the server exactly as DynamoDB Local's own
// ServerRunner does (same command-line flags), then sets the host of its
// Jetty connectors to 127.0.0.1 before starting it.
//
// Run with Java's single-file source launcher:
//   java -cp 'DynamoDBLocal.jar:DynamoDBLocal_lib/*' -Djava.library.path=DynamoDBLocal_lib \
//        Loopback.java -port 8000 -inMemory -sharedDb -disableTelemetry
import java.lang.reflect.Field;

import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

public class Loopback {
    public static void main(String[] args) throws Exception {
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(args);
        Field f = DynamoDBProxyServer.class.getDeclaredField("server");
        f.setAccessible(true);
        Server server = (Server) f.get(proxy);
        for (Connector c : server.getConnectors()) {
            ((ServerConnector) c).setHost("127.0.0.1");
        }
        proxy.start();
        System.out.println("DynamoDB Local listening on 127.0.0.1");
        proxy.join();
    }
}
