package dev.taskpool.engine;

import dev.taskpool.plugin.TaskpoolHookPlugin;
import org.camunda.bpm.engine.rest.security.auth.ProcessEngineAuthenticationFilter;
import org.camunda.bpm.engine.rest.security.auth.impl.HttpBasicAuthenticationProvider;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.context.annotation.Bean;

/**
 * A plain Camunda 7 engine: REST API at /engine-rest, webapps at /camunda/app/.
 * Everything else (datasource, admin user, history level) is in application.yaml.
 */
@SpringBootApplication
public class CamundaEngineApplication {

  public static void main(String[] args) {
    SpringApplication.run(CamundaEngineApplication.class, args);
  }

  /**
   * HTTP basic auth on the REST API, checked against the engine's own users.
   * Off only with taskpool.rest-auth.enabled=false (env TASKPOOL_REST_AUTH_ENABLED=false).
   */
  @Bean
  @ConditionalOnProperty(name = "taskpool.rest-auth.enabled", havingValue = "true", matchIfMissing = true)
  public FilterRegistrationBean<ProcessEngineAuthenticationFilter> engineRestBasicAuth() {
    FilterRegistrationBean<ProcessEngineAuthenticationFilter> registration =
        new FilterRegistrationBean<>(new ProcessEngineAuthenticationFilter());
    registration.setName("engine-rest-basic-auth");
    registration.addUrlPatterns("/engine-rest/*");
    registration.addInitParameter(
        ProcessEngineAuthenticationFilter.AUTHENTICATION_PROVIDER_PARAM,
        HttpBasicAuthenticationProvider.class.getName());
    return registration;
  }

  /**
   * Signed task hooks to the collector, sent after each commit. The starter adds every
   * ProcessEnginePlugin bean to the engine; with an empty URL the plugin logs one line and does nothing.
   */
  @Bean
  public TaskpoolHookPlugin taskpoolHookPlugin(
      @Value("${taskpool.hook.url:}") String url,
      @Value("${taskpool.hook.secret:}") String secret,
      @Value("${taskpool.hook.timeout-ms:2000}") int timeoutMs) {
    TaskpoolHookPlugin plugin = new TaskpoolHookPlugin();
    plugin.setHookUrl(url);
    plugin.setHookSecret(secret);
    plugin.setTimeoutMs(timeoutMs);
    return plugin;
  }
}
