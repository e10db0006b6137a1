#!/bin/sh
# After `azd deploy`: subscribe the app's Event Grid functions (an AzureFunction destination needs
# the code deployed first, and no key or handshake). Idempotent: `create` updates an existing one.
# Undeliverable events are dead-lettered to the storage container the Bicep created.
set -eu
: "${AZURE_FUNCTION_APP_ID:?run azd provision first: AZURE_FUNCTION_APP_ID is not set}"
: "${EVENTGRID_TOPIC_ID:?run azd provision first: EVENTGRID_TOPIC_ID is not set}"
: "${DEADLETTER_CONTAINER_ID:?run azd provision first: DEADLETTER_CONTAINER_ID is not set}"
: "${AZURE_SUBSCRIPTION_ID:?AZURE_SUBSCRIPTION_ID is not set}"
: "${BUILD_RESOURCE_GROUP:?run azd provision first: BUILD_RESOURCE_GROUP is not set}"

subscribe() { # name source function [extra az args...]
  name=$1 source=$2 fn=$3
  shift 3
  az eventgrid event-subscription create \
    --name "$name" --source-resource-id "$source" \
    --endpoint-type azurefunction --endpoint "$AZURE_FUNCTION_APP_ID/functions/$fn" \
    --deadletter-endpoint "$DEADLETTER_CONTAINER_ID" \
    --max-delivery-attempts 30 --event-ttl 1440 "$@" --output none
  echo "subscribed $fn to $name"
}

# The app's own events, one subscription per function (the table is shared/event_subscriptions.py).
python3 -m shared.event_subscriptions | while read -r fn types; do
  # shellcheck disable=SC2046 # one argument per event type
  subscribe "imagefactory-$(echo "$fn" | tr '_' '-')" "$EVENTGRID_TOPIC_ID" "$fn" \
    --included-event-types $(echo "$types" | tr ',' ' ')
done

# Resource events of the subscription (system topic), for the event-first waits: only writes,
# deletes and actions that ended, only in the resource groups the app works in (build, gallery,
# and the existing groups the catalogue names). Types: shared/event_subscriptions.py --system.
: "${GALLERY_RESOURCE_GROUP:?run azd provision first: GALLERY_RESOURCE_GROUP is not set}"
system_topic=imagefactory-resources
if ! az eventgrid system-topic show -g "$AZURE_RESOURCE_GROUP" -n "$system_topic" --output none 2>/dev/null; then
  az eventgrid system-topic create -g "$AZURE_RESOURCE_GROUP" -n "$system_topic" \
    --location global --topic-type Microsoft.Resources.Subscriptions \
    --source "/subscriptions/$AZURE_SUBSCRIPTION_ID" --output none
fi
system_topic_id=$(az eventgrid system-topic show -g "$AZURE_RESOURCE_GROUP" -n "$system_topic" --query id -o tsv)
groups="$BUILD_RESOURCE_GROUP $GALLERY_RESOURCE_GROUP $(python3 -c 'import json; print(" ".join(json.load(open("infra/catalogue-scopes.json"))["existingResourceGroups"]))')"
prefixes=""
for group in $groups; do
  prefixes="$prefixes /subscriptions/$AZURE_SUBSCRIPTION_ID/resourceGroups/$group/"
done
python3 -m shared.event_subscriptions --system | while read -r fn types; do
  # shellcheck disable=SC2046,SC2086 # one argument per event type and per prefix
  subscribe "imagefactory-$(echo "$fn" | tr '_' '-')" "$system_topic_id" "$fn" \
    --included-event-types $(echo "$types" | tr ',' ' ') \
    --advanced-filter subject StringBeginsWith $prefixes
done
