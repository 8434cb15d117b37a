package dev.taskpool.plugin;

import java.net.URI;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;
import org.camunda.bpm.engine.ProcessEngineException;
import org.camunda.bpm.engine.impl.cfg.AbstractProcessEnginePlugin;
import org.camunda.bpm.engine.impl.cfg.ProcessEngineConfigurationImpl;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Process engine plugin that POSTs an HMAC-signed record of every task a transaction created,
 * changed, completed or deleted to the taskpool collector, after the transaction commits.
 *
 * <p>Configured with bean setters (Spring, Camunda Run's {@code plugin-parameters}, bpm-platform.xml
 * properties); unset values fall back to the environment: {@code TASKPOOL_HOOK_URL},
 * {@code TASKPOOL_HOOK_SECRET}, {@code TASKPOOL_HOOK_TIMEOUT_MS}. Without a URL it does nothing.
 */
public class TaskpoolHookPlugin extends AbstractProcessEnginePlugin {

  private static final Logger LOG = LoggerFactory.getLogger(TaskpoolHookPlugin.class);

  public static final String ENV_URL = "TASKPOOL_HOOK_URL";
  public static final String ENV_SECRET = "TASKPOOL_HOOK_SECRET";
  public static final String ENV_TIMEOUT_MS = "TASKPOOL_HOOK_TIMEOUT_MS";
  public static final int DEFAULT_TIMEOUT_MS = 2000;
  /** 0 = no limit: the collector applies its payload size rule, the same for hooks and polling. */
  public static final int DEFAULT_MAX_VARIABLE_CHARS = 0;

  private String hookUrl;
  private String hookSecret;
  private Integer timeoutMs;
  private int maxVariableChars = DEFAULT_MAX_VARIABLE_CHARS;

  @Override
  public void preInit(ProcessEngineConfigurationImpl configuration) {
    String url = firstNonBlank(hookUrl, System.getenv(ENV_URL));
    if (url == null) {
      LOG.info("Taskpool hook plugin inactive: neither hookUrl nor {} is set", ENV_URL);
      return;
    }
    String secret = firstNonBlank(hookSecret, System.getenv(ENV_SECRET));
    if (secret == null) {
      // Unsigned hooks would be rejected by the collector anyway; fail loudly instead of silently.
      throw new ProcessEngineException("Taskpool hook plugin: the hook URL is set (" + url + ") but no secret; "
          + "set hookSecret or " + ENV_SECRET + ", or unset the URL to disable the plugin");
    }
    URI uri = parseUrl(url);
    int timeout = resolveTimeout();
    if (maxVariableChars < 0) {
      throw new ProcessEngineException("Taskpool hook plugin: maxVariableChars must not be negative");
    }

    HookSender sender = new HookSender(uri, new HookSigner(secret), Duration.ofMillis(timeout),
        configuration::getProcessEngineName); // read when sending: other plugins may still set the name
    register(configuration, sender::enqueue, maxVariableChars);
    sender.start();
    LOG.info("Taskpool hook plugin active: POST {} (timeout {} ms, {})", uri, timeout,
        maxVariableChars == 0 ? "no variable size limit" : "String/Json/Xml/Object variables up to " + maxVariableChars + " chars");
  }

  /** The listeners, the history handler and the per-transaction fold; records go to {@code sink} after each commit. */
  static void register(ProcessEngineConfigurationImpl configuration, Consumer<List<HookSender.TaskRecord>> sink,
      int maxVariableChars) {
    if (configuration.getCustomSessionFactories() == null) {
      configuration.setCustomSessionFactories(new ArrayList<>());
    }
    configuration.getCustomSessionFactories().add(new TransactionFold.Factory(sink, maxVariableChars));
    if (configuration.getCustomPostBPMNParseListeners() == null) {
      configuration.setCustomPostBPMNParseListeners(new ArrayList<>());
    }
    configuration.getCustomPostBPMNParseListeners().add(new HookListeners.ParseListener());
    // Added to the custom list only: the default database history handler stays enabled.
    if (configuration.getCustomHistoryEventHandlers() == null) {
      configuration.setCustomHistoryEventHandlers(new ArrayList<>());
    }
    configuration.getCustomHistoryEventHandlers().add(new HookListeners.HistoryHandler());
  }

  private static URI parseUrl(String url) {
    try {
      URI uri = URI.create(url);
      if (!("http".equals(uri.getScheme()) || "https".equals(uri.getScheme())) || uri.getHost() == null) {
        throw new IllegalArgumentException("not an absolute http(s) URL");
      }
      return uri;
    } catch (IllegalArgumentException e) {
      throw new ProcessEngineException("Taskpool hook plugin: invalid hook URL '" + url + "': " + e.getMessage(), e);
    }
  }

  private int resolveTimeout() {
    int timeout = DEFAULT_TIMEOUT_MS;
    if (timeoutMs != null) {
      timeout = timeoutMs;
    } else {
      String env = firstNonBlank(System.getenv(ENV_TIMEOUT_MS));
      if (env != null) {
        try {
          timeout = Integer.parseInt(env);
        } catch (NumberFormatException e) {
          throw new ProcessEngineException("Taskpool hook plugin: " + ENV_TIMEOUT_MS + " is not a number: " + env);
        }
      }
    }
    if (timeout <= 0) {
      throw new ProcessEngineException("Taskpool hook plugin: the timeout must be positive, got " + timeout);
    }
    return timeout;
  }

  private static String firstNonBlank(String... values) {
    for (String value : values) {
      if (value != null && !value.isBlank()) {
        return value.trim();
      }
    }
    return null;
  }

  // Bean properties. Getters exist for binders that need them; there is none for the secret.

  public String getHookUrl() {
    return hookUrl;
  }

  public void setHookUrl(String hookUrl) {
    this.hookUrl = hookUrl;
  }

  public void setHookSecret(String hookSecret) {
    this.hookSecret = hookSecret;
  }

  public int getTimeoutMs() {
    return timeoutMs == null ? DEFAULT_TIMEOUT_MS : timeoutMs;
  }

  public void setTimeoutMs(int timeoutMs) {
    this.timeoutMs = timeoutMs;
  }

  public int getMaxVariableChars() {
    return maxVariableChars;
  }

  /** Leaves out String/Json/Xml/Object values longer than this; 0 (the default) = no limit. */
  public void setMaxVariableChars(int maxVariableChars) {
    this.maxVariableChars = maxVariableChars;
  }

  @Override
  public String toString() {
    return "TaskpoolHookPlugin[hookUrl=" + hookUrl + ", hookSecret=" + (hookSecret == null ? "unset" : "(set)")
        + ", timeoutMs=" + timeoutMs + ", maxVariableChars=" + maxVariableChars + "]";
  }
}
