// The Function App (Flex Consumption, Linux, Python) and what it needs: storage with the code
// package container, monitoring with Entra-only ingestion, the app's Event Grid topic, role
// assignments for the app's own identity, diagnostic settings and alerts.
targetScope = 'resourceGroup'

param location string
param tags object
param suffix string
param environmentName string
param pythonVersion string
param buildResourceGroupName string
param buildSubnetId string
param allowedSubscriptions string
param alertEmail string
@description('User-assigned identity the build VMs carry (publishes the sysprep signal).')
param buildVmIdentityId string
param apiClientId string
param callbackAllowedHosts string
@secure()
param callbackSigningSecret string
@description('Deployment time (the signing secret expires a year after it is set).')
param deployedAt string = utcNow()

var storageName = toLower('stimgf${suffix}${take(uniqueString(resourceGroup().id), 6)}')
var deploymentContainer = 'app-package'
var deadLetterContainer = 'eventgrid-deadletter'
var taskHub = 'avdimagefactory'
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  logAnalyticsReader: '73c42c96-874c-492b-b04d-ab87d138a893'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  tags: tags
  sku: { name: 'Standard_ZRS' }
  kind: 'StorageV2'
  properties: {
    allowSharedKeyAccess: false // identity only: no keys exist to leak
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: { deleteRetentionPolicy: { enabled: true, days: 7 } }
}

// Flex Consumption deploys the code package from this container (azd uploads it there).
resource packages 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainer
  properties: { publicAccess: 'None' }
}

// Events Event Grid could not deliver (after its retries) land here, for the alert and a replay.
resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deadLetterContainer
  properties: { publicAccess: 'None' }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-imagefactory-${suffix}'
  location: location
  tags: tags
  properties: { retentionInDays: 30, sku: { name: 'PerGB2018' } }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-imagefactory-${suffix}'
  location: location
  tags: tags
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id, DisableLocalAuth: true }
}

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: 'egt-imagefactory-${suffix}'
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    inputSchema: 'EventGridSchema'
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-imagefactory-${suffix}'
  location: location
  tags: tags
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  kind: 'functionapp'
  // Zone redundant where the region has availability zones (Flex Consumption supports it).
  properties: { reserved: true, zoneRedundant: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-imagefactory-${suffix}'
  location: location
  tags: union(tags, { 'azd-service-name': 'app' })
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      runtime: { name: 'python', version: pythonVersion }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
        // Orchestrations and activities wake at once after an idle night: no cold-start gap.
        alwaysReady: [{ name: 'durable', instanceCount: 1 }]
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'TASKHUB_NAME', value: taskHub }
        { name: 'AZURE_SUBSCRIPTION_ID', value: subscription().subscriptionId }
        { name: 'ALLOWED_SUBSCRIPTIONS', value: allowedSubscriptions }
        { name: 'FACTORY_RESOURCE_GROUP', value: buildResourceGroupName }
        { name: 'FACTORY_LOCATION', value: location }
        { name: 'IMAGE_CATALOGUE_PATH', value: 'catalogue/images.yaml' }
        { name: 'EVENTGRID_TOPIC_ENDPOINT', value: topic.properties.endpoint }
        { name: 'BUILD_VM_IDENTITY_ID', value: buildVmIdentityId }
        // host pools' diagnostic settings send WVDConnections here; ring gates read them
        { name: 'LOG_ANALYTICS_WORKSPACE_ID', value: logs.id }
        { name: 'CALLBACK_ALLOWED_HOSTS', value: callbackAllowedHosts }
        // a Key Vault reference: the app resolves it with its identity, the value never shows
        { name: 'CALLBACK_SIGNING_SECRET', value: empty(callbackSigningSecret) ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=callback-signing-secret)' }
        { name: 'POLL_INTERVAL_SECONDS', value: '30' }
        { name: 'ARM_MAX_RETRIES', value: '3' }
      ]
    }
  }
}

// App Service Authentication (Entra ID): every request needs a token for the API's app
// registration; the platform injects X-MS-CLIENT-PRINCIPAL (app roles in its claims) and strips
// a forged one. The routes' own checks (triggers/_api.py) rely on it.
resource auth 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: apiClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: { allowedAudiences: ['api://${apiClientId}', apiClientId] }
      }
    }
    login: { tokenStore: { enabled: false } }
  }
}

// The callback signing key, only when callbacks are on: RBAC vault, purge protection.
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-imgf-${suffix}'
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource signingSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(callbackSigningSecret)) {
  parent: vault
  name: 'callback-signing-secret'
  properties: {
    value: callbackSigningSecret
    contentType: 'text/plain'
    attributes: { enabled: true, exp: dateTimeToEpoch(dateTimeAdd(deployedAt, 'P1Y')) }
  }
}

resource vaultAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, app.id, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

resource appDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: app
  properties: {
    workspaceId: logs.id
    logs: [{ category: 'FunctionAppLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

resource topicDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: topic
  properties: {
    workspaceId: logs.id
    logs: [{ categoryGroup: 'allLogs', enabled: true }]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

// Role assignments of the app's identity, named deterministically.
var storageRoles = [roles.storageBlobDataOwner, roles.storageQueueDataContributor, roles.storageTableDataContributor]

resource storageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in storageRoles: {
  name: guid(storage.id, app.id, role)
  scope: storage
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource topicAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, app.id, roles.eventGridDataSender)
  scope: topic
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
  }
}

// Application Insights with local auth off accepts telemetry only from this role.
resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, app.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// Ring gates query failed connections (WVDConnections) in the workspace the host pools log to.
resource logsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(logs.id, app.id, roles.logAnalyticsReader)
  scope: logs
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.logAnalyticsReader)
  }
}

// Event Grid writes undeliverable events to the dead-letter container with the topic's identity.
resource deadLetterAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, topic.id, roles.storageBlobDataContributor)
  scope: storage
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

module alerts 'alerts.bicep' = {
  name: 'alerts-${suffix}'
  params: {
    location: location
    tags: tags
    suffix: suffix
    insightsId: insights.id
    topicId: topic.id
    alertEmail: alertEmail
  }
}

output functionAppName string = app.name
output functionAppId string = app.id
output principalId string = app.identity.principalId
output topicName string = topic.name
output topicId string = topic.id
output topicEndpoint string = topic.properties.endpoint
output deadLetterContainerId string = '${storage.id}/blobServices/default/containers/${deadLetterContainer}'
