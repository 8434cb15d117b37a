package dev.taskpool.plugin;

/**
 * A minimal streaming JSON writer. The plugin must not depend on a JSON library (it runs on
 * whatever classpath the engine has), and the hook bodies are small and flat enough that this is
 * all it needs. Commas are tracked with one flag: a value or a closed container is followed by a
 * comma if anything else comes in the same container.
 */
final class JsonWriter {

  private final StringBuilder out;
  private boolean comma;

  JsonWriter() {
    this(new StringBuilder(256));
  }

  JsonWriter(StringBuilder out) {
    this.out = out;
  }

  JsonWriter beginObject() {
    separate();
    out.append('{');
    comma = false;
    return this;
  }

  JsonWriter endObject() {
    out.append('}');
    comma = true;
    return this;
  }

  JsonWriter beginArray() {
    separate();
    out.append('[');
    comma = false;
    return this;
  }

  JsonWriter endArray() {
    out.append(']');
    comma = true;
    return this;
  }

  JsonWriter name(String name) {
    separate();
    quote(name, out);
    out.append(':');
    comma = false;
    return this;
  }

  JsonWriter value(String value) {
    separate();
    if (value == null) {
      out.append("null");
    } else {
      quote(value, out);
    }
    comma = true;
    return this;
  }

  JsonWriter value(long value) {
    separate();
    out.append(value);
    comma = true;
    return this;
  }

  /** Non-finite doubles have no JSON form; callers must check {@link Double#isFinite} first. */
  JsonWriter value(double value) {
    if (!Double.isFinite(value)) {
      throw new IllegalArgumentException("JSON has no representation for " + value);
    }
    separate();
    out.append(value);
    comma = true;
    return this;
  }

  JsonWriter value(boolean value) {
    separate();
    out.append(value);
    comma = true;
    return this;
  }

  JsonWriter nullValue() {
    return value((String) null);
  }

  /** Appends an already serialized JSON value (e.g. a record rendered earlier) as the next value. */
  JsonWriter raw(String json) {
    separate();
    out.append(json);
    comma = true;
    return this;
  }

  @Override
  public String toString() {
    return out.toString();
  }

  private void separate() {
    if (comma) {
      out.append(',');
    }
  }

  /** Returns {@code s} as a JSON string literal. */
  static String quote(String s) {
    StringBuilder sb = new StringBuilder(s.length() + 2);
    quote(s, sb);
    return sb.toString();
  }

  /**
   * Writes {@code s} as a JSON string literal (RFC 8259). Everything outside the mandatory escapes
   * is written as is (the body is sent as UTF-8), except lone UTF-16 surrogates: they have no UTF-8
   * encoding and strict parsers (serde_json) reject them even as \\u escapes, so they become U+FFFD.
   * U+2028/U+2029 are escaped so the text is also safe to embed in JavaScript.
   */
  static void quote(String s, StringBuilder out) {
    out.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"': out.append("\\\""); break;
        case '\\': out.append("\\\\"); break;
        case '\b': out.append("\\b"); break;
        case '\f': out.append("\\f"); break;
        case '\n': out.append("\\n"); break;
        case '\r': out.append("\\r"); break;
        case '\t': out.append("\\t"); break;
        case '\u2028': out.append("\\u2028"); break;
        case '\u2029': out.append("\\u2029"); break;
        default:
          if (c < 0x20) {
            out.append(String.format("\\u%04x", (int) c));
          } else if (Character.isHighSurrogate(c)) {
            if (i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
              out.append(c).append(s.charAt(++i));
            } else {
              out.append('\uFFFD');
            }
          } else if (Character.isLowSurrogate(c)) {
            out.append('\uFFFD');
          } else {
            out.append(c);
          }
      }
    }
    out.append('"');
  }
}
