package dev.taskpool.plugin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import org.camunda.bpm.engine.ProcessEngineException;
import org.camunda.bpm.engine.impl.cfg.ProcessEngineConfigurationImpl;
import org.camunda.bpm.engine.impl.cfg.StandaloneInMemProcessEngineConfiguration;
import org.junit.jupiter.api.Test;

/** Configuration handling only: preInit on a configuration object, no engine is built. */
class TaskpoolHookPluginTest {

  @Test
  void withoutUrlDoesNothing() {
    assumeTrue(System.getenv(TaskpoolHookPlugin.ENV_URL) == null, "TASKPOOL_HOOK_URL is set in this environment");
    ProcessEngineConfigurationImpl configuration = new StandaloneInMemProcessEngineConfiguration();
    new TaskpoolHookPlugin().preInit(configuration);
    assertTrue(configuration.getCustomHistoryEventHandlers().isEmpty());
    assertTrue(configuration.getCustomSessionFactories() == null || configuration.getCustomSessionFactories().isEmpty());
  }

  @Test
  void urlWithoutSecretRefusesToStart() {
    assumeTrue(System.getenv(TaskpoolHookPlugin.ENV_SECRET) == null, "TASKPOOL_HOOK_SECRET is set in this environment");
    TaskpoolHookPlugin plugin = new TaskpoolHookPlugin();
    plugin.setHookUrl("http://127.0.0.1:7201/v1/hooks");
    ProcessEngineException e = assertThrows(ProcessEngineException.class,
        () -> plugin.preInit(new StandaloneInMemProcessEngineConfiguration()));
    assertTrue(e.getMessage().contains("no secret"), e.getMessage());
  }

  @Test
  void invalidUrlIsRejected() {
    TaskpoolHookPlugin plugin = new TaskpoolHookPlugin();
    plugin.setHookUrl("ftp://example.org/hooks");
    plugin.setHookSecret("taskpool-test-secret");
    assertThrows(ProcessEngineException.class, () -> plugin.preInit(new StandaloneInMemProcessEngineConfiguration()));
  }

  @Test
  void activeRegistersListenersAndKeepsTheDefaultHistoryHandler() {
    TaskpoolHookPlugin plugin = new TaskpoolHookPlugin();
    plugin.setHookUrl("http://127.0.0.1:7201/v1/hooks");
    plugin.setHookSecret("taskpool-test-secret");
    ProcessEngineConfigurationImpl configuration = new StandaloneInMemProcessEngineConfiguration();
    plugin.preInit(configuration);
    assertEquals(1, configuration.getCustomSessionFactories().size());
    assertEquals(1, configuration.getCustomPostBPMNParseListeners().size());
    assertEquals(1, configuration.getCustomHistoryEventHandlers().size());
    assertTrue(configuration.isEnableDefaultDbHistoryEventHandler());
    assertEquals(0, plugin.getMaxVariableChars(), "no variable size limit unless configured");
    assertFalse(plugin.toString().contains("taskpool-test-secret"));
  }
}
