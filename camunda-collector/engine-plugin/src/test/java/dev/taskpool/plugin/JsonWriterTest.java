package dev.taskpool.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

class JsonWriterTest {

  @Test
  void escapesQuotesAndBackslashes() {
    assertEquals("\"say \\\"hi\\\" to C:\\\\temp\"", JsonWriter.quote("say \"hi\" to C:\\temp"));
  }

  @Test
  void escapesControlCharacters() {
    assertEquals("\"\\b\\f\\n\\r\\t\"", JsonWriter.quote("\b\f\n\r\t"));
    assertEquals("\"\\u0000\\u0001\\u001f\"", JsonWriter.quote("\u0000\u0001\u001f"));
    assertEquals("\"\u007f\"", JsonWriter.quote("\u007f")); // DEL needs no escape in JSON
  }

  @Test
  void keepsUnicodeAndEscapesLineSeparators() {
    assertEquals("\"Grüße € 日本 😀\"", JsonWriter.quote("Grüße € 日本 😀"));
    assertEquals("\"a\\u2028b\\u2029c\"", JsonWriter.quote("a\u2028b\u2029c"));
  }

  @Test
  void replacesLoneSurrogates() {
    assertEquals("\"x\uFFFDy\uFFFD\"", JsonWriter.quote("x\uD83Dy\uDE00"));
  }

  @Test
  void writesNestedStructuresWithCommas() {
    String json = new JsonWriter().beginObject()
        .name("s").value("v")
        .name("n").nullValue()
        .name("i").value(42L)
        .name("d").value(1.5)
        .name("b").value(true)
        .name("a").beginArray().value("x").value("y").beginObject().endObject().endArray()
        .name("o").beginObject().name("k").value(-1L).endObject()
        .name("r").raw("{\"pre\":true}")
        .endObject().toString();
    assertEquals("{\"s\":\"v\",\"n\":null,\"i\":42,\"d\":1.5,\"b\":true,\"a\":[\"x\",\"y\",{}],"
        + "\"o\":{\"k\":-1},\"r\":{\"pre\":true}}", json);
  }

  @Test
  void refusesNonFiniteNumbers() {
    assertThrows(IllegalArgumentException.class, () -> new JsonWriter().value(Double.NaN));
  }

  @Test
  void formatsDatesLikeCamundaRest() {
    // 2026-11-23T20:40:05.123Z; the offset depends on the JVM's zone, like Camunda's REST API.
    String formatted = TaskSnapshot.formatDate(new java.util.Date(1795466405123L));
    assertEquals(true, formatted.matches("\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}[+-]\\d{4}"), formatted);
  }
}
