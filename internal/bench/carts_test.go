package bench

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/reservations/reservations/schemas"
)

func TestGenCartPlan(t *testing.T) {
	p := genCartPlan("c1", 2000, 50, 7)
	q := genCartPlan("c1", 2000, 50, 7)
	require.Len(t, p.carts, 2000)
	soldOut, keep := 0, 0
	for i, c := range p.carts {
		assert.Equal(t, q.carts[i].skus, c.skus, "the same seed gives the same carts")
		require.Len(t, c.skus, cartLines)
		assert.Len(t, slices.Compact(slices.Clone(c.sorted)), cartLines, "distinct SKUs")
		assert.True(t, slices.IsSorted(c.sorted))
		for k, sku := range c.sorted {
			j := slices.Index(c.skus, sku)
			assert.Equal(t, c.qtys[j], c.sortedQty[k])
			assert.GreaterOrEqual(t, c.qtys[j], int64(1))
		}
		if c.soldOut {
			soldOut++
		}
		if c.keep {
			keep++
		}
		assert.Equal(t, 2*i, c.slot)
	}
	assert.InDelta(t, cartSoldOutShare*2000, soldOut, 40)
	assert.InDelta(t, cartKeepShare*2000, keep, 50)
	p.encode()
	cmd, err := schemas.DecodeCartCommand(p.carts[0].reserve, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, schemas.TypeCartReserve, cmd.Type)
	assert.Len(t, cmd.Items, cartLines)
	rel, err := schemas.DecodeCartCommand(p.carts[0].release, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, p.carts[0].cart, rel.CartID)
}

func TestResultProblem(t *testing.T) {
	line := func(sku, outcome, status string) schemas.CartLine {
		return schemas.CartLine{SKU: sku, Outcome: outcome, Status: status}
	}
	acc := schemas.OutcomeAccepted
	ok := schemas.CartResult{Type: schemas.TypeCartReserve, Outcome: acc, Lines: []schemas.CartLine{
		line("a", acc, schemas.StatusActive), line("b", acc, schemas.StatusActive), line("c", acc, schemas.StatusActive)}}
	assert.Empty(t, resultProblem(&ok))
	partial := ok
	partial.Lines = slices.Clone(ok.Lines)
	partial.Lines[1] = line("b", schemas.OutcomeRejected, "")
	assert.NotEmpty(t, resultProblem(&partial))
	rej := schemas.CartResult{Type: schemas.TypeCartReserve, Outcome: schemas.OutcomeRejected, Lines: []schemas.CartLine{
		line("a", acc, schemas.StatusReleased), line("b", schemas.OutcomeRejected, ""), line("c", "", "")}}
	assert.Empty(t, resultProblem(&rej))
	rej.Lines[0].Status = schemas.StatusActive
	assert.NotEmpty(t, resultProblem(&rej), "a rejected cart holding a line")
}

// TestSQLCartCheckDetects runs carts through the SQL baseline, checks them,
// then breaks a cart and a SKU and makes sure the check says so.
func TestSQLCartCheckDetects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := tinyRun(ctx, t)
	pg, cfg := r.pg, r.cfg
	require.NoError(t, r.createCartSchema(ctx))
	pool, err := pg.pool(ctx, sqlCartSchema, 4)
	require.NoError(t, err)
	defer pool.Close()

	p := genCartPlan("t1", 200, cfg.CartSKUs, 3)
	var st CartStep
	cartLoop(ctx, sqlCartExec{pool: pool}, p, 8, 30*time.Second, &st)
	require.Zero(t, st.Errors+st.ReleaseErrors)
	require.Equal(t, 200, st.Carts)
	soldOut := 0
	for _, c := range p.carts {
		if c.soldOut {
			soldOut++
			assert.Equal(t, cartRejected, c.state, "a cart with a sold-out line is rejected")
		}
	}
	assert.Equal(t, soldOut, st.Rejected)
	c := checkSQLCarts(ctx, pool, []*cartPlan{p})
	require.True(t, c.OK(), "%+v", c)
	assert.Equal(t, 200, c.Carts)

	// A kept cart loses a line: partial (and its SKU's reserved disagrees).
	kept := p.carts[slices.IndexFunc(p.carts, func(c cartOp) bool { return c.state == cartKept })]
	_, err = pool.Exec(ctx, `DELETE FROM reservations WHERE reservation_id = $1`, kept.id+"/"+kept.skus[0])
	require.NoError(t, err)
	c = checkSQLCarts(ctx, pool, []*cartPlan{p})
	assert.False(t, c.OK())
	assert.Equal(t, 1, c.PartialCarts)
	assert.Equal(t, 1, c.MismatchedSKUs)
	assert.Equal(t, 1, c.Other, "a cart of 2 lines in the table")

	// A rejected cart holding a line.
	rej := p.carts[slices.IndexFunc(p.carts, func(c cartOp) bool { return c.state == cartRejected })]
	_, err = pool.Exec(ctx, `INSERT INTO reservations (reservation_id, sku, quantity, status, expires_at, cart_id)
		VALUES ($1, $2, 1, 'active', now(), $3)`, rej.id+"/x", rej.skus[0], rej.cart)
	require.NoError(t, err)
	c = checkSQLCarts(ctx, pool, []*cartPlan{p})
	assert.Equal(t, 2, c.PartialCarts)

	// And the report counts the violations.
	rep := newReport(cfg)
	rep.Carts.Steps = []CartStep{st}
	rep.Carts.Checks = []CartCheck{c}
	rep.finish()
	assert.Equal(t, float64(c.Violations()), rep.Headline["cart_violations"])
	assert.Positive(t, rep.Headline["cart_violations"])
	assert.Contains(t, rep.markdown(), "violations, 0 of 1 checks failed")
}
