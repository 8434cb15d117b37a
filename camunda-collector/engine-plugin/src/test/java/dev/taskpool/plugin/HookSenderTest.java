package dev.taskpool.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The sender alone: no engine. An in-JVM HTTP server on an ephemeral loopback port stands in for the
 * collector's hook endpoint.
 */
class HookSenderTest {

  private static final String SECRET = "taskpool-test-secret";
  private static final Pattern RECORD = Pattern.compile("\\{\"event\":\"update\",\"task\":\\{\"id\":\"([^\"]+)\"\\},\"seq\":(\\d+)\\}");

  /** A record as the engine side would render it, reduced to what the tests look at. */
  private static HookSender.TaskRecord record(String taskId, int seq) {
    return new HookSender.TaskRecord(taskId, "{\"event\":\"update\",\"task\":{\"id\":\"" + taskId + "\"},\"seq\":" + seq + "}");
  }

  private static HookSender sender(int port, Duration timeout, int queueCapacity, Duration openPeriod) {
    return new HookSender(URI.create("http://127.0.0.1:" + port + "/hooks"), new HookSigner(SECRET), timeout,
        () -> "default", queueCapacity, Duration.ofMillis(1), openPeriod);
  }

  private static void await(String what, Duration limit, BooleanSupplier condition) throws InterruptedException {
    long deadline = System.nanoTime() + limit.toNanos();
    while (!condition.getAsBoolean()) {
      if (System.nanoTime() > deadline) {
        throw new AssertionError("not within " + limit + ": " + what);
      }
      Thread.sleep(5);
    }
  }

  @Test
  void coalescesOneTaskToItsLastRecordInOrder() {
    List<List<HookSender.TaskRecord>> batches = List.of(
        List.of(record("a", 1), record("b", 2)),
        List.of(record("c", 3), record("a", 4)),
        List.of(record("d", 5)));
    List<List<HookSender.TaskRecord>> requests = HookSender.coalesce(batches, 2);
    assertEquals(List.of(List.of(record("b", 2), record("c", 3)), List.of(record("a", 4), record("d", 5))), requests);
    assertTrue(HookSender.coalesce(List.of(List.of()), 100).isEmpty());
  }

  /** (a) What queues up while the receiver is slow goes out merged: ≤ 3 requests of ≤ 100 for 250 records. */
  @Test
  void mergesTheBacklogOfASlowReceiver() throws Exception {
    try (Receiver receiver = Receiver.start(0)) {
      CountDownLatch firstArrived = new CountDownLatch(1);
      CountDownLatch release = new CountDownLatch(1);
      receiver.gate(firstArrived, release);
      HookSender sender = sender(receiver.port(), Duration.ofSeconds(20), 10_000, Duration.ofSeconds(5));
      try {
        sender.start();
        sender.enqueue(List.of(record("warm-up", 0)));
        assertTrue(firstArrived.await(10, TimeUnit.SECONDS), "the first request never arrived");

        // The receiver is now busy: 250 records in 50 transactions of 5; task "dup" is in three of them.
        Map<String, Integer> expected = new LinkedHashMap<>();
        int seq = 0;
        for (int tx = 0; tx < 50; tx++) {
          List<HookSender.TaskRecord> batch = new ArrayList<>();
          for (int i = 0; i < 5; i++) {
            seq++;
            String id = (i == 2 && (tx == 3 || tx == 20 || tx == 33)) ? "dup" : "task-" + seq;
            batch.add(record(id, seq));
            expected.remove(id);
            expected.put(id, seq);
          }
          sender.enqueue(batch);
        }
        assertEquals(248, expected.size());
        release.countDown();

        await("all records delivered", Duration.ofSeconds(10), () -> sender.deliveredRecords() == 1 + 248);
        List<Receiver.Request> requests = receiver.requests();
        assertEquals(List.of(Map.entry("warm-up", 0)), requests.get(0).records());
        List<Receiver.Request> merged = requests.subList(1, requests.size());
        assertTrue(merged.size() <= 3, "requests: " + merged.size());
        List<Map.Entry<String, Integer>> received = new ArrayList<>();
        for (Receiver.Request request : merged) {
          assertTrue(request.records().size() <= 100, "tasks in one request: " + request.records().size());
          assertTrue(request.body().startsWith("{\"engine\":\"default\",\"sentAt\":\""), request.body());
          assertEquals(new HookSigner(SECRET).signature(request.timestamp(), request.body().getBytes(StandardCharsets.UTF_8)),
              request.signature());
          received.addAll(request.records());
        }
        assertEquals(new ArrayList<>(expected.entrySet()), received);
        assertEquals(List.of(Map.entry("dup", 33 * 5 + 3)), received.stream().filter(r -> r.getKey().equals("dup")).toList());
      } finally {
        release.countDown();
        sender.stop();
      }
    }
  }

  /**
   * (b) Without a receiver, a burst is dropped at once instead of being retried batch by batch; once
   * the open period has passed, the next batch probes, reaches the receiver that came up meanwhile,
   * and closes the breaker.
   */
  @Test
  void dropsWhileOpenAndProbesAfterTheOpenPeriod() throws Exception {
    int port;
    try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getByName("127.0.0.1"))) {
      port = socket.getLocalPort(); // closed again: nothing listens there
    }
    Duration openPeriod = Duration.ofSeconds(2);
    HookSender sender = sender(port, Duration.ofSeconds(2), 10_000, openPeriod);
    try {
      sender.start();
      long start = System.nanoTime();
      for (int i = 0; i < 1000; i++) {
        sender.enqueue(List.of(record("task-" + i, i)));
      }
      assertEquals(0, sender.droppedQueueFull());
      await("the burst drained", Duration.ofSeconds(5),
          () -> sender.queued() == 0 && sender.droppedAfterFailure() + sender.droppedWhileOpen() == 1000);
      assertTrue(sender.droppedWhileOpen() > 0);
      assertEquals(0, sender.deliveredRecords());

      try (Receiver receiver = Receiver.start(port)) {
        // The breaker opened after `start`, so it is surely still open this early.
        if (System.nanoTime() - start < openPeriod.toNanos() / 2) {
          assertTrue(sender.breakerOpen());
          sender.enqueue(List.of(record("early", 1)));
          await("the early batch dropped", Duration.ofSeconds(1),
              () -> sender.droppedAfterFailure() + sender.droppedWhileOpen() == 1001);
          assertTrue(receiver.requests().isEmpty());
        }

        await("the open period passed", openPeriod.plusSeconds(5), () -> !sender.breakerOpen());
        sender.enqueue(List.of(record("next", 2)));
        await("the next batch delivered", Duration.ofSeconds(5), () -> sender.deliveredRecords() == 1);
        assertEquals(1, receiver.requests().size());
        assertEquals(List.of(Map.entry("next", 2)), receiver.requests().get(0).records());
        assertFalse(sender.breakerOpen());

        sender.enqueue(List.of(record("after", 3)));
        await("a later batch delivered", Duration.ofSeconds(5), () -> sender.deliveredRecords() == 2);
      }
    } finally {
      sender.stop();
    }
  }

  @Test
  void clientErrorIsNotRetriedAndDoesNotOpenTheBreaker() throws Exception {
    try (Receiver receiver = Receiver.start(0)) {
      receiver.status = 401;
      HookSender sender = sender(receiver.port(), Duration.ofSeconds(5), 10_000, Duration.ofSeconds(30));
      try {
        sender.start();
        sender.enqueue(List.of(record("a", 1)));
        await("the rejected batch dropped", Duration.ofSeconds(5), () -> sender.droppedAfterFailure() == 1);
        assertEquals(1, receiver.requests().size());
        assertFalse(sender.breakerOpen());

        receiver.status = 200;
        sender.enqueue(List.of(record("b", 2)));
        await("the next batch delivered", Duration.ofSeconds(5), () -> sender.deliveredRecords() == 1);
      } finally {
        sender.stop();
      }
    }
  }

  @Test
  void serverErrorIsRetriedThenOpensTheBreaker() throws Exception {
    try (Receiver receiver = Receiver.start(0)) {
      receiver.status = 503;
      HookSender sender = sender(receiver.port(), Duration.ofSeconds(5), 10_000, Duration.ofSeconds(30));
      try {
        sender.start();
        sender.enqueue(List.of(record("a", 1)));
        await("the failed batch dropped", Duration.ofSeconds(5), () -> sender.droppedAfterFailure() == 1);
        assertEquals(HookSender.MAX_ATTEMPTS, receiver.requests().size());
        assertTrue(sender.breakerOpen());

        sender.enqueue(List.of(record("b", 2)));
        await("the next batch dropped", Duration.ofSeconds(5), () -> sender.droppedWhileOpen() == 1);
        assertEquals(HookSender.MAX_ATTEMPTS, receiver.requests().size());
      } finally {
        sender.stop();
      }
    }
  }

  @Test
  void fullQueueDropsWithoutBlocking() {
    HookSender sender = sender(1, Duration.ofSeconds(1), 3, Duration.ofSeconds(5)); // never started
    for (int i = 0; i < 5; i++) {
      sender.enqueue(List.of(record("task-" + i, i), record("other-" + i, i)));
    }
    assertEquals(3, sender.queued());
    assertEquals(4, sender.droppedQueueFull());
  }

  /** Records every request; answers {@link #status}, holding the first request while a gate is set. */
  private static final class Receiver implements AutoCloseable {

    record Request(String timestamp, String signature, String body) {
      List<Map.Entry<String, Integer>> records() {
        List<Map.Entry<String, Integer>> records = new ArrayList<>();
        Matcher matcher = RECORD.matcher(body);
        while (matcher.find()) {
          records.add(Map.entry(matcher.group(1), Integer.parseInt(matcher.group(2))));
        }
        return records;
      }
    }

    private final HttpServer server;
    private final ExecutorService executor = Executors.newCachedThreadPool();
    private final List<Request> requests = new CopyOnWriteArrayList<>();
    volatile int status = 200;
    private volatile CountDownLatch firstArrived;
    private volatile CountDownLatch release;

    private Receiver(HttpServer server) {
      this.server = server;
    }

    static Receiver start(int port) throws IOException {
      Receiver receiver = new Receiver(HttpServer.create(new InetSocketAddress(InetAddress.getByName("127.0.0.1"), port), 0));
      receiver.server.createContext("/hooks", exchange -> {
        String body = new String(exchange.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
        receiver.requests.add(new Request(exchange.getRequestHeaders().getFirst(HookSigner.TIMESTAMP_HEADER),
            exchange.getRequestHeaders().getFirst(HookSigner.SIGNATURE_HEADER), body));
        if (receiver.firstArrived != null && receiver.requests.size() == 1) {
          receiver.firstArrived.countDown();
          try {
            receiver.release.await(15, TimeUnit.SECONDS);
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
          }
        }
        byte[] answer = (receiver.status / 100 == 2 ? "" : "status " + receiver.status).getBytes(StandardCharsets.UTF_8);
        exchange.sendResponseHeaders(receiver.status, answer.length == 0 ? -1 : answer.length);
        try (OutputStream out = exchange.getResponseBody()) {
          out.write(answer);
        }
      });
      receiver.server.setExecutor(receiver.executor);
      receiver.server.start();
      return receiver;
    }

    void gate(CountDownLatch firstArrived, CountDownLatch release) {
      this.release = release;
      this.firstArrived = firstArrived;
    }

    int port() {
      return server.getAddress().getPort();
    }

    List<Request> requests() {
      return new ArrayList<>(requests);
    }

    @Override
    public void close() {
      server.stop(0);
      executor.shutdownNow();
    }
  }
}
