// Alerts: a failed build, a paused rollout (from the app's telemetry), dead-lettered events.
targetScope = 'resourceGroup'

param location string
param tags object
param suffix string
param insightsId string
param topicId string
param alertEmail string

resource team 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-imagefactory-${suffix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'imgfactory'
    enabled: true
    emailReceivers: [{ name: 'operators', emailAddress: alertEmail, useCommonAlertSchema: true }]
  }
}

var actions = empty(alertEmail) ? [] : [team.id]

// The app logs one line per lifecycle event it publishes (shared/telemetry.py): these queries
// read those lines (traces) from Application Insights.
var queries = {
  'build-failed': 'traces | where message has "imagefactory.event" and customDimensions.event_type == "ImageFactory.BuildFailed"'
  'rollout-paused': 'traces | where message has "imagefactory.event" and customDimensions.event_type == "ImageFactory.RolloutPaused"'
}

resource logAlerts 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for item in items(queries): {
  name: 'alert-imagefactory-${item.key}-${suffix}'
  location: location
  tags: tags
  properties: {
    displayName: 'AVD image factory: ${item.key}'
    severity: 2
    enabled: true
    scopes: [insightsId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: item.value
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: actions }
  }
}]

resource deadLettered 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: 'alert-imagefactory-deadlettered-${suffix}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Event Grid dead-lettered an event for the app: a build or rollout may not have started.'
    severity: 2
    enabled: true
    scopes: [topicId]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'deadlettered'
          metricName: 'DeadLetteredCount'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
          criterionType: 'StaticThresholdCriterion'
        }
      ]
    }
    actions: [for id in actions: { actionGroupId: id }]
  }
}
