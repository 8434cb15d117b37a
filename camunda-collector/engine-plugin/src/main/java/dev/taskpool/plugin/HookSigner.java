package dev.taskpool.plugin;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.util.HexFormat;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The hook signature: {@code sha256=<lowercase hex HMAC-SHA256(secret, timestamp + "." + body)>}.
 * The timestamp is inside the MAC so the collector can reject replays of old requests.
 */
final class HookSigner {

  static final String TIMESTAMP_HEADER = "X-Taskpool-Timestamp";
  static final String SIGNATURE_HEADER = "X-Taskpool-Signature";
  private static final String ALGORITHM = "HmacSHA256";

  private final SecretKeySpec key;

  HookSigner(String secret) {
    this.key = new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), ALGORITHM);
  }

  /** The value of the signature header for this timestamp (epoch millis, decimal) and raw body. */
  String signature(String timestamp, byte[] body) {
    try {
      Mac mac = Mac.getInstance(ALGORITHM); // not thread-safe, so one per call
      mac.init(key);
      mac.update(timestamp.getBytes(StandardCharsets.UTF_8));
      mac.update((byte) '.');
      mac.update(body);
      return "sha256=" + HexFormat.of().formatHex(mac.doFinal());
    } catch (GeneralSecurityException e) {
      // HmacSHA256 is a mandatory JCA algorithm; this cannot happen on a conforming JVM.
      throw new IllegalStateException("HmacSHA256 unavailable", e);
    }
  }

  @Override
  public String toString() {
    return "HookSigner[secret hidden]";
  }
}
