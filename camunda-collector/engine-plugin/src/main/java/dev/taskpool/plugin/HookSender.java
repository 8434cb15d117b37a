package dev.taskpool.plugin;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Date;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ArrayBlockingQueue;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Delivers committed task records to the collector on one daemon thread, so the engine's
 * transactions never wait for (or fail because of) the collector. Losing a hook is acceptable: the
 * collector polls and reconciles, hooks only make it fast. So the sender favours freshness over
 * completeness:
 *
 * <ul>
 *   <li>a bounded queue that drops (with a rate-limited warning) when full;
 *   <li>each send takes everything waiting and coalesces it: one record per task (its last, which
 *       carries the final state), in order, in requests of at most {@value #MAX_TASKS_PER_REQUEST};
 *   <li>a few quick retries, then a circuit breaker: after a request fails all its attempts,
 *       everything taken from the queue during the open period is dropped at once, so a backlog
 *       never builds up behind a collector that is down or slow. After the period, the next request
 *       is a probe (one attempt): success closes the breaker, failure opens it again.
 * </ul>
 */
final class HookSender {

  private static final Logger LOG = LoggerFactory.getLogger(HookSender.class);

  /** One hook record: the task's id (for coalescing) and its JSON object. */
  record TaskRecord(String taskId, String json) {}

  static final int QUEUE_CAPACITY = 10_000;
  /** Caps the body size (a cancelled process may end hundreds of tasks in one transaction). */
  static final int MAX_TASKS_PER_REQUEST = 100;
  static final int MAX_ATTEMPTS = 5;
  static final Duration FIRST_BACKOFF = Duration.ofMillis(100);
  static final Duration OPEN_PERIOD = Duration.ofSeconds(5);
  /** At most one "queue full" warning per this interval (engine threads hit it in bursts). */
  static final Duration QUEUE_FULL_WARNING_INTERVAL = Duration.ofSeconds(10);
  private static final int MAX_LOGGED_BODY_CHARS = 500;

  private enum Breaker { CLOSED, OPEN, HALF_OPEN }

  private enum Outcome { DELIVERED, REJECTED, FAILED }

  private final URI url;
  private final HookSigner signer;
  private final Duration timeout;
  private final Supplier<String> engineName;
  private final int queueCapacity;
  private final long firstBackoffMs;
  private final long openNanos;
  private final HttpClient client;
  private final BlockingQueue<List<TaskRecord>> queue;
  private final Thread thread;

  // Engine threads: queue-full drops, reported at most once per QUEUE_FULL_WARNING_INTERVAL.
  private final AtomicLong queueFullRecords = new AtomicLong();
  private final AtomicLong queueFullSinceWarning = new AtomicLong();
  private final AtomicLong lastQueueFullWarning;

  // Sender thread only (volatile so tests can read them).
  private volatile Breaker breaker = Breaker.CLOSED;
  private long openUntil; // System.nanoTime() at which the open period ends
  private long droppedThisOpenPeriod;
  private volatile long droppedWhileOpen;
  private volatile long droppedAfterFailure;
  private volatile long deliveredRecords;

  HookSender(URI url, HookSigner signer, Duration timeout, Supplier<String> engineName) {
    this(url, signer, timeout, engineName, QUEUE_CAPACITY, FIRST_BACKOFF, OPEN_PERIOD);
  }

  /** Tests: a small queue, a short backoff and a short open period. */
  HookSender(URI url, HookSigner signer, Duration timeout, Supplier<String> engineName,
      int queueCapacity, Duration firstBackoff, Duration openPeriod) {
    this.url = url;
    this.signer = signer;
    this.timeout = timeout;
    this.engineName = engineName;
    this.queueCapacity = queueCapacity;
    this.firstBackoffMs = firstBackoff.toMillis();
    this.openNanos = openPeriod.toNanos();
    this.queue = new ArrayBlockingQueue<>(queueCapacity);
    this.lastQueueFullWarning = new AtomicLong(System.nanoTime() - QUEUE_FULL_WARNING_INTERVAL.toNanos());
    // HTTP/1.1: the default (HTTP/2) would try an h2c upgrade on every plain-http request.
    this.client = HttpClient.newBuilder()
        .version(HttpClient.Version.HTTP_1_1)
        .connectTimeout(timeout)
        .build();
    this.thread = new Thread(this::run, "taskpool-hook-sender");
    this.thread.setDaemon(true);
  }

  void start() {
    thread.start();
  }

  /** Tests: ends the sender thread. */
  void stop() {
    thread.interrupt();
  }

  /** Called after a commit, on the engine's thread: must not block. */
  void enqueue(List<TaskRecord> records) {
    if (queue.offer(records)) {
      return;
    }
    queueFullRecords.addAndGet(records.size());
    queueFullSinceWarning.addAndGet(records.size());
    long now = System.nanoTime();
    long last = lastQueueFullWarning.get();
    if (now - last >= QUEUE_FULL_WARNING_INTERVAL.toNanos() && lastQueueFullWarning.compareAndSet(last, now)) {
      LOG.warn("Taskpool hook queue is full ({} transactions waiting); dropped {} task record(s) since the last "
          + "such warning; the collector's reconciliation will pick the changes up",
          queueCapacity, queueFullSinceWarning.getAndSet(0));
    }
  }

  private void run() {
    List<List<TaskRecord>> taken = new ArrayList<>();
    try {
      while (true) {
        taken.clear();
        if (breaker == Breaker.OPEN) {
          long wait = openUntil - System.nanoTime();
          if (wait > 0) {
            List<TaskRecord> first = queue.poll(wait, TimeUnit.NANOSECONDS);
            if (first != null) {
              taken.add(first);
              queue.drainTo(taken);
              for (List<TaskRecord> records : taken) {
                dropWhileOpen(records.size());
              }
            }
            continue;
          }
          endOpenPeriod();
        }
        taken.add(queue.take());
        queue.drainTo(taken);
        send(coalesce(taken, MAX_TASKS_PER_REQUEST));
      }
    } catch (InterruptedException e) {
      // stopped
    }
  }

  private void send(List<List<TaskRecord>> requests) throws InterruptedException {
    for (List<TaskRecord> records : requests) {
      if (breaker == Breaker.OPEN) { // an earlier request of this send failed
        dropWhileOpen(records.size());
        continue;
      }
      boolean probe = breaker == Breaker.HALF_OPEN;
      Outcome outcome;
      try {
        outcome = deliver(records, probe ? 1 : MAX_ATTEMPTS);
      } catch (RuntimeException e) {
        LOG.warn("Taskpool hook: unexpected error; dropped {} task record(s)", records.size(), e);
        droppedAfterFailure += records.size();
        continue;
      }
      switch (outcome) {
        case DELIVERED:
          deliveredRecords += records.size();
          closeIfProbing(probe);
          break;
        case REJECTED: // the collector answered, so it is up
          droppedAfterFailure += records.size();
          closeIfProbing(probe);
          break;
        default:
          droppedAfterFailure += records.size();
          breaker = Breaker.OPEN;
          openUntil = System.nanoTime() + openNanos;
          droppedThisOpenPeriod = 0;
          break;
      }
    }
  }

  private void closeIfProbing(boolean probe) {
    if (probe) {
      breaker = Breaker.CLOSED;
      LOG.info("Taskpool hook: {} is reachable again; sending hooks", url);
    }
  }

  private void dropWhileOpen(int records) {
    droppedThisOpenPeriod += records;
    droppedWhileOpen += records;
  }

  /** One warning per open period, with everything it dropped. */
  private void endOpenPeriod() {
    if (droppedThisOpenPeriod > 0) {
      LOG.warn("Taskpool hook: dropped {} task record(s) while paused for {} ms after {} failed; "
          + "the collector's reconciliation will pick the changes up; the next request probes it",
          droppedThisOpenPeriod, TimeUnit.NANOSECONDS.toMillis(openNanos), url);
    }
    droppedThisOpenPeriod = 0;
    breaker = Breaker.HALF_OPEN;
  }

  /**
   * Merges batches (in queue order) into requests of at most {@code max} records. A task that
   * occurs several times keeps only its last record, at the position of that last occurrence, so
   * the order across tasks stays that of the final states.
   */
  static List<List<TaskRecord>> coalesce(List<List<TaskRecord>> batches, int max) {
    Map<Object, TaskRecord> latest = new LinkedHashMap<>();
    for (List<TaskRecord> batch : batches) {
      for (TaskRecord record : batch) {
        Object key = record.taskId() != null ? record.taskId() : new Object(); // no id: never merged
        latest.remove(key); // so the put below moves it to the end
        latest.put(key, record);
      }
    }
    List<List<TaskRecord>> requests = new ArrayList<>();
    List<TaskRecord> request = null;
    for (TaskRecord record : latest.values()) {
      if (request == null || request.size() == max) {
        request = new ArrayList<>(Math.min(max, latest.size()));
        requests.add(request);
      }
      request.add(record);
    }
    return requests;
  }

  static String body(String engine, String sentAt, List<String> records) {
    StringBuilder body = new StringBuilder(64 + records.size() * 1024);
    JsonWriter json = new JsonWriter(body)
        .beginObject()
        .name("engine").value(engine)
        .name("sentAt").value(sentAt)
        .name("tasks").beginArray();
    for (String record : records) {
      json.raw(record);
    }
    json.endArray().endObject();
    return body.toString();
  }

  private Outcome deliver(List<TaskRecord> records, int attempts) throws InterruptedException {
    List<String> json = new ArrayList<>(records.size());
    for (TaskRecord record : records) {
      json.add(record.json());
    }
    byte[] body = body(engineName.get(), TaskSnapshot.formatDate(new Date()), json).getBytes(StandardCharsets.UTF_8);
    long backoff = firstBackoffMs;
    String failure = null;
    for (int attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) {
        Thread.sleep(backoff);
        backoff *= 2;
      }
      // A fresh timestamp per attempt, so a retry is not mistaken for a replay of an old request.
      String timestamp = Long.toString(System.currentTimeMillis());
      HttpRequest request = HttpRequest.newBuilder(url)
          .timeout(timeout)
          .header("Content-Type", "application/json")
          .header(HookSigner.TIMESTAMP_HEADER, timestamp)
          .header(HookSigner.SIGNATURE_HEADER, signer.signature(timestamp, body))
          .POST(HttpRequest.BodyPublishers.ofByteArray(body))
          .build();
      try {
        HttpResponse<String> response = client.send(request, HttpResponse.BodyHandlers.ofString());
        int status = response.statusCode();
        if (status >= 200 && status < 300) {
          return Outcome.DELIVERED;
        }
        if (status < 500) {
          // The collector understood and refused (bad signature, clock skew, bad body): retrying cannot help.
          LOG.warn("Taskpool hook rejected by {}: HTTP {} {}; dropped {} task record(s)",
              url, status, truncate(response.body()), records.size());
          return Outcome.REJECTED;
        }
        failure = "HTTP " + status + " " + truncate(response.body());
      } catch (IOException e) {
        failure = e.toString();
      }
    }
    LOG.warn("Taskpool hook: {} failed {} (last: {}); dropped {} task record(s) and pausing hooks for {} ms",
        url, attempts == 1 ? "the probe request" : attempts + " times", failure, records.size(),
        TimeUnit.NANOSECONDS.toMillis(openNanos));
    return Outcome.FAILED;
  }

  private static String truncate(String s) {
    if (s == null) {
      return "";
    }
    return s.length() <= MAX_LOGGED_BODY_CHARS ? s : s.substring(0, MAX_LOGGED_BODY_CHARS) + "…";
  }

  // Tests only.

  int queued() {
    return queue.size();
  }

  boolean breakerOpen() {
    return breaker == Breaker.OPEN;
  }

  long droppedWhileOpen() {
    return droppedWhileOpen;
  }

  long droppedAfterFailure() {
    return droppedAfterFailure;
  }

  long droppedQueueFull() {
    return queueFullRecords.get();
  }

  long deliveredRecords() {
    return deliveredRecords;
  }
}
