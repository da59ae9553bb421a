// The GraphiQL playground's start-up, served as a file of our own so that the page's policy can
// forbid inline scripts. A `?token=` in the address (the start-up link carries one) is kept for
// the browser session and prefilled as the `Authorization` header, then removed from the
// address bar.
(() => {
  const root = document.getElementById('graphiql');
  const params = new URLSearchParams(location.search);
  if (params.has('token')) {
    sessionStorage.setItem('engagement.token', params.get('token'));
    params.delete('token');
    history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : ''));
  }
  const token = sessionStorage.getItem('engagement.token');
  const headers = token ? { Authorization: 'Bearer ' + token } : {};
  const wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + root.dataset.subscriptions;
  const fetcher = GraphiQL.createFetcher({
    url: root.dataset.endpoint,
    subscriptionUrl: wsUrl,
    wsConnectionParams: headers,
  });
  ReactDOM.createRoot(root).render(
    React.createElement(GraphiQL, {
      fetcher,
      defaultHeaders: JSON.stringify(headers, null, 2),
      shouldPersistHeaders: false,
      defaultQuery: '{\n  engagementSummary { users atRisk averageScore emails scoreHistogram }\n}\n',
    }),
  );
})();
