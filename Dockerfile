# Herald: bridge and worker image (`herald run`, `herald bridge` or `herald worker`).
# Postee's image layout is kept: /server/rego-templates/custom, /server/rego-filters, /config/cfg.yaml, uid 1099.
FROM python:3.11-slim
WORKDIR /server
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY actions ./actions
RUN pip install --no-cache-dir . \
 && mkdir -p /server/rego-templates/custom /server/rego-filters /config \
 && useradd --uid 1099 --user-group --home-dir /server postee \
 && chown -R postee:postee /server
USER 1099
ENV POSTEE_CFG=/config/cfg.yaml \
    POSTEE_HTTP=0.0.0.0:8082 \
    REGO_FILTERS_PATH=/server/rego-filters \
    HERALD_TEMPLATE_DIRS=/server/rego-templates/custom
EXPOSE 8082
ENTRYPOINT ["herald"]
CMD ["run"]
