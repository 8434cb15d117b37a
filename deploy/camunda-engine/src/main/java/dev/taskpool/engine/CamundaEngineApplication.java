package dev.taskpool.engine;

import org.camunda.bpm.engine.rest.security.auth.ProcessEngineAuthenticationFilter;
import org.camunda.bpm.engine.rest.security.auth.impl.HttpBasicAuthenticationProvider;
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
}
