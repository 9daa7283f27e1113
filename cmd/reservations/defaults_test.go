package main

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor"
	"github.com/reservations/reservations/topics"
)

// TestProcessorDefaultsComeFromTheProcessor: serve and dev without any
// setting run the processor (and the cart coordinator) exactly as
// processor.DefaultConfig says, so the command line cannot drift from the
// library's defaults.
func TestProcessorDefaultsComeFromTheProcessor(t *testing.T) {
	for _, cmd := range []string{"serve", "dev"} {
		t.Run(cmd, func(t *testing.T) {
			var (
				s   *settings
				p   *pipelineConfig
				err error
			)
			switch cmd {
			case "serve":
				var cfg serveConfig
				s = newSettings(cmd)
				cfg.register(s)
				_, err = s.Parse(nil, envMap())
				p = &cfg.pipelineConfig
			case "dev":
				var cfg devConfig
				s = newSettings(cmd)
				cfg.register(s)
				_, err = s.Parse(nil, envMap())
				p = &cfg.pipelineConfig
			}
			require.NoError(t, err)
			require.NoError(t, p.validate(s), "the defaults are valid")

			got := p.processorConfig([]string{"b:1"}, "/state")
			want := processor.DefaultConfig()
			want.Brokers, want.StateDir, want.Topics = []string{"b:1"}, "/state", topics.NewNames("")
			assert.Equal(t, want, got)

			cart := p.cartConfig(got)
			wantCart := processor.DefaultRoleConfig(processor.RoleCart)
			wantCart.Brokers, wantCart.StateDir, wantCart.Topics = []string{"b:1"}, "/state", topics.NewNames("")
			assert.Equal(t, wantCart, cart)
		})
	}
}

// TestProcessorValidationNamesTheSetting: the processor's rules reject a
// value of the command line naming its flag and variable; flags whose zero
// would be "the default" in processor.Config are rejected, not defaulted.
func TestProcessorValidationNamesTheSetting(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--commit-interval", "0s"}, "invalid --commit-interval (RESERVATIONS_COMMIT_INTERVAL): 0s: must be > 0"},
		{[]string{"--max-batch", "0"}, "invalid --max-batch (RESERVATIONS_MAX_BATCH): 0: must be >= 1"},
		{[]string{"--transaction-timeout", "500ms"}, "invalid --transaction-timeout (RESERVATIONS_TRANSACTION_TIMEOUT): 500ms: must be >= 1s"},
		{[]string{"--group", ""}, "invalid --group (RESERVATIONS_GROUP): must not be empty"},
		{[]string{"--dedupe-window", "59s"}, "invalid --dedupe-window (RESERVATIONS_DEDUPE_WINDOW): 59s: must be >= 1m"},
		{[]string{"--state-cache-mb", "0"}, "invalid --state-cache-mb (RESERVATIONS_STATE_CACHE_MB): 0 MiB: must be >= 1"},
		{[]string{"--state-cache-mb", "-1"}, "invalid --state-cache-mb (RESERVATIONS_STATE_CACHE_MB): -1 MiB: must be >= 1"},
		{[]string{"--state-cache-mb", "17592186044416"}, "invalid --state-cache-mb (RESERVATIONS_STATE_CACHE_MB): 17592186044416: too large"},
	} {
		var cfg serveConfig
		s := newSettings("serve")
		cfg.register(s)
		_, err := s.Parse(append([]string{"--brokers", "b:1"}, tc.args...), envMap())
		require.NoError(t, err)
		err = cfg.validate(s)
		require.Error(t, err, tc.args)
		assert.Contains(t, err.Error(), tc.want)
		var ue *usageError
		assert.True(t, errors.As(err, &ue), "a usage error (exit 2): %v", err)
	}
}

// TestStaticMembershipSettings: --instance-id makes the processor a static
// member with the longer session timeout, --static-membership=false turns it
// off, --session-timeout overrides either default, and a negative one is
// rejected naming the flag.
func TestStaticMembershipSettings(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		static  bool
		leave   bool
		timeout time.Duration
	}{
		{nil, false, false, processor.DefaultSessionTimeout},
		{[]string{"--instance-id", "reservations-0"}, true, false, processor.DefaultStaticSessionTimeout},
		{[]string{"--instance-id", "reservations-0", "--static-membership=false"}, false, false, processor.DefaultSessionTimeout},
		{[]string{"--instance-id", "reservations-0", "--session-timeout", "12s", "--leave-group-on-shutdown"}, true, true, 12 * time.Second},
		{[]string{"--session-timeout", "4s"}, false, false, 4 * time.Second},
	} {
		var cfg serveConfig
		s := newSettings("serve")
		cfg.register(s)
		_, err := s.Parse(append([]string{"--brokers", "b:1"}, tc.args...), envMap())
		require.NoError(t, err)
		require.NoError(t, cfg.validate(s), tc.args)
		pc := cfg.processorConfig([]string{"b:1"}, "/state")
		assert.Equal(t, tc.static, pc.StaticMembership(), tc.args)
		assert.Equal(t, tc.leave, pc.LeaveGroupOnShutdown, tc.args)
		assert.Equal(t, tc.timeout, pc.SessionTimeout, tc.args)
	}
	var cfg serveConfig
	s := newSettings("serve")
	cfg.register(s)
	_, err := s.Parse([]string{"--brokers", "b:1", "--session-timeout", "-1s"}, envMap())
	require.NoError(t, err)
	err = cfg.validate(s)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid --session-timeout (RESERVATIONS_SESSION_TIMEOUT)")
}

// TestSettingsReachBothRoles: --standby-replicas and --state-cache-mb (or
// their variables) reach the processor's config and the cart coordinator's.
func TestSettingsReachBothRoles(t *testing.T) {
	standby := func(c processor.Config) any { return c.StandbyReplicas }
	cache := func(c processor.Config) any { return c.StateCacheBytes }
	for _, tc := range []struct {
		args, env []string
		field     func(processor.Config) any
		want      any
	}{
		{args: []string{"--standby-replicas", "2"}, field: standby, want: 2},
		{env: []string{"RESERVATIONS_STANDBY_REPLICAS", "2"}, field: standby, want: 2},
		{args: []string{"--state-cache-mb", "48"}, field: cache, want: int64(48 << 20)},
		{env: []string{"RESERVATIONS_STATE_CACHE_MB", "48"}, field: cache, want: int64(48 << 20)},
	} {
		var cfg serveConfig
		s := newSettings("serve")
		cfg.register(s)
		_, err := s.Parse(append([]string{"--brokers", "b:1"}, tc.args...), envMap(tc.env...))
		require.NoError(t, err)
		require.NoError(t, cfg.validate(s))
		pc := cfg.processorConfig([]string{"b:1"}, "/state")
		assert.Equal(t, tc.want, tc.field(pc), "%v %v", tc.args, tc.env)
		assert.Equal(t, tc.want, tc.field(cfg.cartConfig(pc)), "cart coordinator: %v %v", tc.args, tc.env)
	}
}
