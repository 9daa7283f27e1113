package processor_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/processor"
)

func TestDefaultConfigValidates(t *testing.T) {
	for _, r := range []processor.Role{processor.RoleSKU, processor.RoleCart} {
		c := processor.DefaultRoleConfig(r)
		assert.NotEmpty(t, c.Group)
		assert.Error(t, c.Validate(), "brokers and state dir are required")
		c.Brokers, c.StateDir = []string{"b:1"}, t.TempDir()
		assert.NoError(t, c.Validate())
	}
	assert.Equal(t, processor.DefaultRoleConfig(processor.RoleSKU), processor.DefaultConfig())
	assert.NotEqual(t, processor.DefaultConfig().Group, processor.DefaultRoleConfig(processor.RoleCart).Group)
}

// Validate names every bad setting as the command line does.
func TestValidateNamesEverySetting(t *testing.T) {
	c := processor.DefaultConfig()
	c.CommitInterval = 0
	c.MaxBatch = -1
	c.TransactionTimeout = 10 * time.Millisecond
	c.Rules.DedupeWindow = time.Second
	c.Rules.MaxExtensions = -2
	c.StandbyReplicas = -1
	err := c.Validate()
	require.Error(t, err)
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var se *processor.SettingError
		require.True(t, errors.As(e, &se), "%v", e)
		got = append(got, se.Setting)
	}
	assert.Equal(t, []string{"brokers", "state-dir", "commit-interval", "max-batch", "transaction-timeout",
		"dedupe-window", "standby-replicas", "max-extensions"}, got)
	assert.Contains(t, err.Error(), "dedupe-window: 1s: must be >= 1m")

	c = processor.DefaultConfig()
	c.Brokers, c.StateDir = []string{"b:1"}, t.TempDir()
	c.StandbyReplicas = processor.MaxStandbyReplicas + 1
	assert.ErrorContains(t, c.Validate(), "standby-replicas: 9: must be between 0 and 8")
	c.StandbyReplicas = processor.MaxStandbyReplicas
	assert.NoError(t, c.Validate())

	// New fills in the defaults first: zero fields are not errors there.
	_, err = processor.New(processor.Config{Brokers: []string{"b:1"}, StateDir: t.TempDir()})
	assert.NoError(t, err)
}

// A static member's id must be a valid group.instance.id (a broker refuses
// another at JoinGroup); with dynamic membership it only names the
// transactional id, and anything goes.
func TestValidateInstanceID(t *testing.T) {
	for _, tc := range []struct {
		id      string
		dynamic bool
		ok      bool
	}{
		{"pod-0", false, true},
		{"reservations-2.eu_west", false, true},
		{"a/b", false, false},
		{"pod 0", false, false},
		{strings.Repeat("x", 250), false, false},
		{"a/b", true, true},
		{"", false, true}, // read from the state folder: not a static member
	} {
		c := processor.DefaultConfig()
		c.Brokers, c.StateDir = []string{"b:1"}, "s"
		c.InstanceID, c.DynamicMembership = tc.id, tc.dynamic
		err := c.Validate()
		if tc.ok {
			assert.NoError(t, err, "%q dynamic=%v", tc.id, tc.dynamic)
		} else {
			assert.ErrorContains(t, err, "instance-id", "%q", tc.id)
		}
	}
}
