package api

import "net/http"

func (s *Server) subscriptionRoutes() {
	notYet := func(w http.ResponseWriter, r *http.Request) error { return errNotImplemented }
	s.handle(http.MethodGet, "/v1/subscriptions/{id}/status", subscribers, notYet)
	s.handle(http.MethodGet, "/v1/subscriptions/{id}/deliveries", subscribers, notYet)
	s.handle(http.MethodPost, "/v1/subscriptions/{id}/redrive", subscribers, notYet)
}
func (s *Server) keyRoutes() {}

func serviceProblem(err error) (problem, bool) { return problem{}, false }
