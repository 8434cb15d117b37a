package dev.taskpool.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

class HookSignerTest {

  /** The shared test vector; the Rust collector asserts the same one. */
  @Test
  void signsTheSharedTestVector() {
    HookSigner signer = new HookSigner("taskpool-test-secret");
    byte[] body = "{\"engine\":\"default\",\"tasks\":[]}".getBytes(StandardCharsets.UTF_8);
    assertEquals("sha256=fcc22f111cc81f3159ec22b91addb0feb2bda5a242986a01dccd2545a77bd2d4",
        signer.signature("1700000000000", body));
  }

  @Test
  void timestampIsPartOfTheSignature() {
    HookSigner signer = new HookSigner("taskpool-test-secret");
    byte[] body = "{\"engine\":\"default\",\"tasks\":[]}".getBytes(StandardCharsets.UTF_8);
    assertFalse(signer.signature("1700000000000", body).equals(signer.signature("1700000000001", body)));
  }

  @Test
  void neverShowsTheSecret() {
    assertFalse(new HookSigner("taskpool-test-secret").toString().contains("taskpool-test-secret"));
    TaskpoolHookPlugin plugin = new TaskpoolHookPlugin();
    plugin.setHookSecret("taskpool-test-secret");
    assertFalse(plugin.toString().contains("taskpool-test-secret"));
  }

  @Test
  void bodyHasTheContractShape() {
    assertEquals("{\"engine\":\"default\",\"sentAt\":\"2026-11-23T20:40:05.123+0000\",\"tasks\":[{\"a\":1},{\"b\":2}]}",
        HookSender.body("default", "2026-11-23T20:40:05.123+0000", java.util.List.of("{\"a\":1}", "{\"b\":2}")));
  }
}
